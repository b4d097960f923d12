"""Merging concurrent searches into batches: one matrix product for many queries.

A flat search costs about the same for 1 query as for 10 (the gallery's vectors are read once
either way), so under load the service gains by answering queued queries together. One batch
runs at a time; queries that arrive while it runs form the next one. An idle service adds no
delay: a lone query runs at once, as a batch of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class SearchBatcher:
    """`await batcher.search(query, k)` -> (probabilities [k], ids [k]); runs `search_fn` in batches."""

    def __init__(self, search_fn: SearchFn, max_batch: int = 64):
        self._search_fn = search_fn
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[np.ndarray, int, asyncio.Future]] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((query, k, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [item for item in batch if not item[2].cancelled()]  # callers that gave up
            if not batch:
                continue
            queries = np.stack([query for query, _, _ in batch])
            k = max(k for _, k, _ in batch)
            try:
                probabilities, ids = await asyncio.to_thread(self._search_fn, queries, k)
            except Exception as exc:  # every caller of the batch gets the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for row, (_, wanted, future) in enumerate(batch):
                if not future.done():
                    future.set_result((probabilities[row, :wanted], ids[row, :wanted]))

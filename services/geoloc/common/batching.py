"""Merging concurrent calls into batches: one forward pass (or one matrix product) for many.

A model's forward pass costs about the same for one request as for several, since its weights
are read once either way, so under load a service gains by running the requests that queued up
together. One batch runs at a time, on a worker thread; requests that arrive while it runs form
the next one. Only requests of the same kind share a batch (`key`: the same method and steps,
say); the others keep their place in the queue for the batches after. An idle service adds no
delay: a lone request runs at once, as a batch of one. The queue is bounded by the server's
admission limit (geoloc.common.admission), not here.

Each request's wait in the queue and the size of the batch it ran in go to the batcher's
metrics (`geoloc_batch_queue_seconds`, `geoloc_batch_size`) and onto the caller's current span.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from geoloc.common.metrics import BatchMetrics
from geoloc.common.tracing import annotate

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass
class _Queued:
    request: object
    future: asyncio.Future
    arrived_s: float
    started_s: float = 0.0
    batch_size: int = 0


class Batcher(Generic[Request, Result]):
    """`await batcher.submit(request)` -> its result, from `run_batch(requests) -> results` (one
    result per request, in order) called on batches of up to `max_batch` requests of one key."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Request]], Sequence[Result]],
        max_batch: int = 64,
        key: Callable[[Request], Hashable] = lambda request: None,
        metrics: BatchMetrics | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._run_batch, self._max_batch, self._key = run_batch, max_batch, key
        self._metrics = metrics
        self._pending: deque[_Queued] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # of the last batches run

    async def submit(self, request: Request) -> Result:
        if self._worker is None or self._worker.done():
            # In a context of its own: the worker serves every caller, and must not carry the
            # request id and span of the call that happened to start it.
            self._worker = asyncio.create_task(self._run(), context=contextvars.Context())
        queued = _Queued(request, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._pending.append(queued)
        self._arrived.set()
        result = await queued.future
        annotate(
            **{
                "geoloc.batch.queue_ms": 1000 * (queued.started_s - queued.arrived_s),
                "geoloc.batch.size": queued.batch_size,
            }
        )
        return result

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def _next_batch(self) -> list[_Queued]:
        """The oldest live request and up to max_batch − 1 more of its key, oldest first; the rest
        stay queued in order."""
        batch, others, kind = [], deque(), None
        while self._pending and len(batch) < self._max_batch:
            queued = self._pending.popleft()
            if queued.future.cancelled():  # its caller gave up
                continue
            if not batch:
                kind = self._key(queued.request)
            (batch if self._key(queued.request) == kind else others).append(queued)
        self._pending.extendleft(reversed(others))
        return batch

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            batch = self._next_batch()
            if not batch:
                continue
            self.batch_sizes = [*self.batch_sizes[-99:], len(batch)]
            started = time.perf_counter()
            for queued in batch:
                queued.started_s, queued.batch_size = started, len(batch)
            if self._metrics is not None:
                for queued in batch:
                    self._metrics.queue_seconds.observe(started - queued.arrived_s)
                self._metrics.batch_size.observe(len(batch))
            try:
                results = await asyncio.to_thread(self._run_batch, [queued.request for queued in batch])
            except Exception as exc:  # every caller of the batch gets the failure
                for queued in batch:
                    if not queued.future.done():
                        queued.future.set_exception(exc)
                continue
            for queued, result in zip(batch, results, strict=True):
                if not queued.future.done():
                    queued.future.set_result(result)

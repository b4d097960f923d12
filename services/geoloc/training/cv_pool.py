"""The folds' worker pool of `geoloc cv`: score(fold) for every fold, in this process or in forked ones.

A fold's score is a closure over every photo's out-of-fold answers, which do not pickle (and would
cost a copy per fold if they did). The workers are forked, so each inherits the closure, and the
answers it reads, from the caller's memory: the pool hands it over as the workers' initializer
argument, which fork copies rather than pickles. Only fold numbers go to a worker and only the
scored folds come back. What a worker builds (a fold's decision tables) stays in that worker: the
caller's cache does not grow, and the caller's module state is never touched.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


class ForkedFolds:
    """`score` run on the folds by `workers` forked processes, each given `score` when it is forked."""

    def __init__(self, score: Callable[[int], Any], workers: int):
        self.score = score
        self.workers = workers

    def scored(self, folds: int) -> Iterator[Any]:
        """score(fold) for folds 0 .. folds - 1, as each finishes."""
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_keep, initargs=(self.score,)) as pool:
            yield from (done.result() for done in as_completed([pool.submit(_score, f) for f in range(folds)]))


# What a forked worker scores with, set by _keep in the worker only (the caller's stays None).
_worker_score: Callable[[int], Any] | None = None


def _keep(score: Callable[[int], Any]) -> None:
    global _worker_score
    _worker_score = score


def _score(fold: int) -> Any:
    return _worker_score(fold)


def scored_folds(score: Callable[[int], Any], folds: int, jobs: int) -> Iterator[Any]:
    """score(fold) for every fold, as each finishes; with jobs > 1 in that many forked processes
    (ForkedFolds), which inherit the out-of-fold answers instead of receiving them pickled."""
    if jobs == 1:
        yield from (score(fold) for fold in range(folds))
        return
    yield from ForkedFolds(score, min(jobs, folds)).scored(folds)

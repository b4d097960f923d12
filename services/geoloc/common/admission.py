"""Bounded admission: a service holds at most `limit` calls at once and refuses the rest at once.

Without a bound an overloaded service queues every call, each waits behind all the others, and
callers' deadlines expire inside the queue (at the orchestrator: experts dropped from answers
that still come back late). Refusing at once, with RESOURCE_EXHAUSTED and a RetryInfo delay,
keeps the admitted calls as fast as the service can serve them and tells the callers when to
come back. The delay is the time in which a slot frees up on average: the admitted calls'
mean duration (an exponentially weighted one, measured here) over the limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from geoloc.common.errors import Overloaded

SMOOTHING = 0.1  # the weight of the latest admitted call in the mean duration
MIN_RETRY_S = 0.05
MAX_RETRY_S = 5.0


class Admission:
    """`with admission.admitted(): ...` runs a call, or raises Overloaded when `limit` already run."""

    def __init__(self, limit: int | None, what: str, first_guess_s: float = 0.5):
        if limit is not None and limit < 1:
            raise ValueError(f"the admission limit must be >= 1 or None, got {limit}")
        self.limit = limit
        self.what = what
        self.in_flight = 0
        self.refused = 0
        self.mean_s = first_guess_s

    def retry_after_s(self) -> float:
        return min(MAX_RETRY_S, max(MIN_RETRY_S, self.mean_s / (self.limit or 1)))

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Holds one slot for the block (on the event loop's thread: the count takes no lock)."""
        if self.limit is not None and self.in_flight >= self.limit:
            self.refused += 1
            raise Overloaded(
                f"{self.what} is serving its limit of {self.limit} calls at once; retry after the RetryInfo delay",
                retry_after_s=self.retry_after_s(),
            )
        self.in_flight += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.mean_s += SMOOTHING * (time.perf_counter() - started - self.mean_s)

"""A circuit breaker in front of the endpoint: after enough consecutive failures, calls are refused
at once for a while instead of each waiting out its timeout against an endpoint that is down.

Closed: calls go through; `failures` consecutive failures open it. Open: every call is refused
until `open_s` have passed. Half-open: one trial call goes through (the others are still
refused); its success closes the breaker, its failure opens it again for another `open_s`.

Every transition holds one lock and no await, so the breaker is safe across threads and the
tasks of an event loop alike.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.IntEnum):
    """As the state gauge reports it."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class Ticket:
    """Permission for one call; `trial` when it is the half-open breaker's one trial."""

    trial: bool


class BreakerOpen(Exception):
    """Refused by the open breaker; `retry_after_s` is when it will let a trial through."""

    def __init__(self, retry_after_s: float):
        super().__init__(f"the circuit breaker is open; a trial call in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic):
        if failures < 1 or open_s <= 0:
            raise ValueError(f"failures must be >= 1 and open_s > 0, got {failures} and {open_s}")
        self.failures, self.open_s, self._clock = failures, open_s, clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False

    def state(self) -> BreakerState:
        """The state a call would meet now: an open breaker whose time is up reads half-open."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.open_s:
                return BreakerState.HALF_OPEN
            return self._state

    def admit(self) -> Ticket:
        """A ticket for one call, to hand back to `succeeded`, `failed` or `released`; raises BreakerOpen."""
        with self._lock:
            if self._state is BreakerState.OPEN:
                waited = self._clock() - self._opened_at
                if waited < self.open_s:
                    raise BreakerOpen(self.open_s - waited)
                self._state = BreakerState.HALF_OPEN
            if self._state is BreakerState.HALF_OPEN:
                if self._trial_out:
                    raise BreakerOpen(min(1.0, self.open_s))  # when the trial will most likely have ended
                self._trial_out = True
                return Ticket(trial=True)
            return Ticket(trial=False)

    def succeeded(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.trial:
                self._trial_out = False
            if ticket.trial or self._state is BreakerState.CLOSED:
                self._state = BreakerState.CLOSED
                self._consecutive = 0

    def failed(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.trial:
                self._trial_out = False
                self._open()
            elif self._state is BreakerState.CLOSED:
                self._consecutive += 1
                if self._consecutive >= self.failures:
                    self._open()

    def released(self, ticket: Ticket) -> None:
        """The call ended without a verdict on the endpoint (cancelled by its caller, say): a trial
        ticket goes back, so that the next call may try instead."""
        with self._lock:
            if ticket.trial:
                self._trial_out = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._consecutive = 0

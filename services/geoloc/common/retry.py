"""Calling again after an overloaded server's refusal: RESOURCE_EXHAUSTED with a RetryInfo delay.

A server at its admission limit (geoloc.common.admission) refuses at once and says when to come
back. Only such refusals are retried: gRPC's own RESOURCE_EXHAUSTED (a message too large, too many
streams) carries no delay, and sending the same call again would fail the same way. UNAVAILABLE is
retried by the channels' service config (geoloc.common.channels), not here.

Each retry waits the larger of the server's delay and an exponential backoff, with full jitter
(a random share of it) so that refused clients do not come back all at once, and every attempt
runs within what is left of the caller's one overall timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from geoloc.common.errors import retry_delay_s

Reply = TypeVar("Reply")

BACKOFF_S = 0.1  # the first retry's backoff; doubled at each one
MAX_BACKOFF_S = 5.0


def is_overloaded(error: grpc.aio.AioRpcError) -> bool:
    """An admission refusal: RESOURCE_EXHAUSTED carrying a RetryInfo delay."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay_s(error) is not None


def retry_wait_s(server_delay_s: float | None, attempt: int, rng: random.Random) -> float:
    """How long to wait after refused attempt `attempt` (counting from 1) whose refusal asked for
    `server_delay_s`."""
    backoff = min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (attempt - 1))
    wait = max(server_delay_s or 0.0, backoff)
    return wait * (0.5 + 0.5 * rng.random())  # half fixed, half jitter: never sooner than half the delay


async def call_with_retry(
    call: Callable[..., Awaitable[Reply]],
    request,
    timeout_s: float,
    max_attempts: int | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[grpc.aio.AioRpcError, float], None] | None = None,
) -> Reply:
    """`await call(request, timeout=...)`, retried after admission refusals while the overall
    `timeout_s` (and `max_attempts`, if given) last; the last refusal (or any other error) is
    raised. `on_retry(error, wait_s)` is told of each retry."""
    rng = rng or random.Random()
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(request, timeout=max(0.0, deadline - time.monotonic()))
        except grpc.aio.AioRpcError as error:
            if not is_overloaded(error) or attempt == max_attempts:
                raise
            wait = retry_wait_s(retry_delay_s(error), attempt, rng)
            if time.monotonic() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(error, wait)
            await asyncio.sleep(wait)

"""What operators count of the judge, beside its server's gRPC metrics on the same /metrics: calls
to the endpoint and how they ended, tokens spent, the endpoint's latency, the breaker's state.

Every labelled series exists from the start at zero, so that rates and alerts read 0 rather
than nothing before the first failure.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from geoloc.common.metrics import LATENCY_BUCKETS_S

# An endpoint that gave no response (each a gRPC status), then replies that could not be used
# (each an OK response with its failure field set).
ENDPOINT_FAILURES = ("breaker_open", "unreachable", "server_error", "rate_limited", "timeout", "refused")
UNUSABLE_REPLIES = (
    "too_large",
    "empty",
    "no_json",
    "missing_field",
    "bad_value",
    "out_of_range",
    "not_a_candidate",
)
FAILURE_KINDS = ENDPOINT_FAILURES + UNUSABLE_REPLIES
OUTCOMES = ("answered", "cannot_tell", "failed")


class JudgeMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.calls = Counter(
            "geoloc_judge_calls",
            "Judge calls that reached the endpoint step, by outcome: answered, cannot_tell (no point), failed.",
            ("outcome",),
            registry=registry,
        )
        self.failures = Counter(
            "geoloc_judge_failures",
            "Failed judge calls by kind: the endpoint's (breaker_open, unreachable, server_error, rate_limited, "
            "timeout, refused) or the reply's (too_large, empty, no_json, missing_field, bad_value, out_of_range, "
            "not_a_candidate).",
            ("kind",),
            registry=registry,
        )
        self.tokens = Counter(
            "geoloc_judge_tokens",
            "Tokens the endpoint counted, by direction: in (prompt) or out.",
            ("direction",),
            registry=registry,
        )
        self.latency = Histogram(
            "geoloc_judge_endpoint_seconds",
            "Time of one call to the endpoint, retries and the wait for a slot included, in seconds.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.breaker_state = Gauge(
            "geoloc_judge_breaker_state", "The circuit breaker: 0 closed, 1 half-open, 2 open.", registry=registry
        )
        self._outcome = {o: self.calls.labels(o) for o in OUTCOMES}
        self._failure = {k: self.failures.labels(k) for k in FAILURE_KINDS}
        self._tokens = {d: self.tokens.labels(d) for d in ("in", "out")}

    def watch_breaker(self, state: Callable[[], int]) -> None:
        """Reads the breaker's state at each scrape."""
        self.breaker_state.set_function(lambda: float(state()))

    def answered(self, point: bool) -> None:
        self._outcome["answered" if point else "cannot_tell"].inc()

    def failed(self, kind: str) -> None:
        self._outcome["failed"].inc()
        self._failure[kind].inc()

    def spent(self, tokens_in: int, tokens_out: int, seconds: float | None) -> None:
        self._tokens["in"].inc(tokens_in)
        self._tokens["out"].inc(tokens_out)
        if seconds is not None:
            self.latency.observe(seconds)

"""What operators count of the orchestrator's answers: each expert's outcome, partial answers and
the time spent in fusion, beside the server's gRPC metrics on the same /metrics.

Every series exists from the start at zero (each expert with each outcome, each kind of answer),
so that rates and alerts read 0 rather than nothing before the first failure.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram

from geoloc.common.metrics import LATENCY_BUCKETS_S
from geoloc.experts import EXPERTS
from geoloc.v1 import orchestrator_pb2

STATUS_PREFIX = "EXPERT_STATUS_"
OUTCOMES = tuple(
    name.removeprefix(STATUS_PREFIX)
    for name, _number in orchestrator_pb2.ExpertStatus.items()
    if name != f"{STATUS_PREFIX}UNSPECIFIED"
)
# complete: every expert asked answered; partial: some did not, some did; prior_only: none did.
ANSWER_KINDS = ("complete", "partial", "prior_only")


def answer_kind(statuses: Mapping[str, int]) -> str:
    """How complete an answer is, from each expert's ExpertStatus (SKIPPED ones were not asked)."""
    asked = [s for s in statuses.values() if s != orchestrator_pb2.EXPERT_STATUS_SKIPPED]
    answered = sum(s == orchestrator_pb2.EXPERT_STATUS_OK for s in asked)
    if answered == 0:
        return "prior_only"
    return "complete" if answered == len(asked) else "partial"


class LocateMetrics:
    """The orchestrator's own metrics, registered in its server's registry."""

    def __init__(self, registry: CollectorRegistry):
        self.outcomes = Counter(
            "geoloc_expert_outcomes",
            "Experts' outcomes, one per expert per photo answered: OK, DEADLINE_EXCEEDED, UNAVAILABLE, FAILED, "
            "SKIPPED (not asked).",
            ("expert", "outcome"),
            registry=registry,
        )
        self.answers = Counter(
            "geoloc_answers",
            "Photos answered, by kind: complete (every expert asked answered), partial, prior_only (none did).",
            ("kind",),
            registry=registry,
        )
        self.fusion_seconds = Histogram(
            "geoloc_fusion_seconds",
            "Time to fuse the experts' answers into one, per photo, in seconds.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._outcome = {(e, o): self.outcomes.labels(e, o) for e in EXPERTS for o in OUTCOMES}
        self._answer = {kind: self.answers.labels(kind) for kind in ANSWER_KINDS}

    def answered(self, statuses: Mapping[str, int]) -> None:
        """Counts one photo's answer from each expert's ExpertStatus."""
        for expert, status in statuses.items():
            self._outcome[expert, orchestrator_pb2.ExpertStatus.Name(status).removeprefix(STATUS_PREFIX)].inc()
        self._answer[answer_kind(statuses)].inc()

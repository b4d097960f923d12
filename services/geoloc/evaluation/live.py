"""Scoring the live orchestrator: every photo of a split goes to Locate, and the fused answer is
scored side by side with each expert's own top point.

`OrchestratorPredictions` is a PredictionSource (geoloc.evaluation.predictions), so the usual
harness matches and scores it; it asks with include_expert_outputs=True and reads, per photo:

* the fused best guess (the Prediction's lat, lon);
* each expert's top point, its first point in ExpertOutput.points (the gallery's nearest GPS
  point, the sampler method's highest mode, the tokens' most probable cell), for the experts
  whose status is OK and that returned points;
* on the side (`LiveStats`): whether the truth lies within the answer's radius_50_km and
  radius_90_km (calibration: ideally 50 % and 90 % of photos), how often each expert came back
  with each status, the failed calls, and the wall time.

Photos go `concurrency` at a time on one channel. A call the orchestrator refuses as overloaded
(RESOURCE_EXHAUSTED with a retry delay) is sent again after the delay, with backoff, within its
timeout (geoloc.common.retry), and counted in `retries`. UNAVAILABLE means the orchestrator is
not there (or not ready), and stops the run with OrchestratorUnreachable; any other failed call
leaves that photo out (the harness then reports it missing) and is counted in `failures`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from geoloc.common.tls import ClientTls
from geoloc.evaluation.dataset import LabelledImage
from geoloc.evaluation.predictions import Prediction
from geoloc.evaluation.report import Report
from geoloc.experts import EXPERT_NAMES, EXPERTS

FUSED_LABEL = "fused"


class OrchestratorUnreachable(RuntimeError):
    """The orchestrator answered UNAVAILABLE or could not be connected to."""


@dataclass
class LiveStats:
    """What the run saw besides the guesses; filled while `predict` runs."""

    sent: int = 0
    retries: int = 0  # calls sent again after the orchestrator refused them as overloaded
    answered: int = 0
    within_radius_50: int = 0
    within_radius_90: int = 0
    statuses: dict[str, Counter] = field(default_factory=lambda: {name: Counter() for name in EXPERTS})
    failures: Counter = field(default_factory=Counter)  # gRPC code name (or "unreadable") -> photos
    failure_examples: dict[str, str] = field(default_factory=dict)  # the first message seen for each code
    total_ms: list[float] = field(default_factory=list)  # the orchestrator's own timings.total_ms
    wall_s: float = 0.0

    def ok_count(self, expert: str) -> int:
        return self.statuses[expert]["OK"]

    def to_dict(self) -> dict[str, Any]:
        n = max(self.answered, 1)
        ordered = sorted(self.total_ms)
        return {
            "sent": self.sent,
            "retries": self.retries,
            "answered": self.answered,
            "failures": dict(self.failures),
            "failure_examples": dict(self.failure_examples),
            "calibration": {
                "within_radius_50": self.within_radius_50 / n if self.answered else None,
                "within_radius_90": self.within_radius_90 / n if self.answered else None,
                "ideal": {"within_radius_50": 0.5, "within_radius_90": 0.9},
            },
            "expert_statuses": {name: dict(counts) for name, counts in self.statuses.items()},
            "wall_s": self.wall_s,
            "photos_per_s": self.answered / self.wall_s if self.wall_s > 0 else None,
            "server_total_ms": {
                "median": ordered[len(ordered) // 2] if ordered else None,
                "mean": sum(ordered) / len(ordered) if ordered else None,
            },
        }


class OrchestratorPredictions:
    """Guesses from the orchestrator at `address` (see the module's docstring)."""

    experts: tuple[str, ...] = EXPERTS  # listed up front, so an expert that never answers still gets a row

    def __init__(self, address: str, concurrency: int = 1, timeout_s: float = 60.0, tls: ClientTls | None = None):
        """`tls`: speak TLS (or mutual TLS) to an orchestrator that serves it; None: plaintext."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.address = address
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.tls = tls
        self.stats = LiveStats()

    @property
    def description(self) -> str:
        return f"orchestrator:{self.address}"

    def predict(self, records: Sequence[LabelledImage]) -> Iterator[Prediction]:
        """Yields one Prediction per answered photo, as answers arrive (not in `records`' order)."""
        # The harness consumes a plain iterator (with its progress bar), so drive the event loop
        # here one completed call at a time instead of handing it a coroutine.
        loop = asyncio.new_event_loop()
        started = time.perf_counter()
        pending: set[asyncio.Task] = set()
        channel = None
        try:
            channel, stub = loop.run_until_complete(self._connect())
            gate = asyncio.Semaphore(self.concurrency)
            pending = {loop.create_task(self._one(stub, gate, record)) for record in records}
            while pending:
                done, pending = loop.run_until_complete(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                for task in done:
                    prediction = task.result()  # raises OrchestratorUnreachable
                    if prediction is not None:
                        yield prediction
        finally:
            self.stats.wall_s = time.perf_counter() - started
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            if channel is not None:
                loop.run_until_complete(channel.close())
            loop.close()

    async def _connect(self):
        from geoloc.common.channels import create_channel
        from geoloc.v1 import orchestrator_pb2_grpc

        channel = create_channel(self.address, tls=self.tls)
        return channel, orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

    async def _one(self, stub, gate: asyncio.Semaphore, record: LabelledImage) -> Prediction | None:
        import grpc

        from geoloc.common.retry import call_with_retry
        from geoloc.v1 import orchestrator_pb2

        try:
            image = await asyncio.to_thread(record.path.read_bytes)
        except OSError as exc:
            self.stats.failures["unreadable"] += 1
            self.stats.failure_examples.setdefault("unreadable", f"{record.path}: {exc.strerror or exc}")
            return None
        request = orchestrator_pb2.LocateRequest(
            image=image, options=orchestrator_pb2.LocateOptions(include_expert_outputs=True)
        )
        async with gate:
            self.stats.sent += 1
            try:
                response = await call_with_retry(stub.Locate, request, self.timeout_s, on_retry=self._count_retry)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    raise OrchestratorUnreachable(
                        f"the orchestrator at {self.address} is unavailable ({error.details()}); "
                        "is the suite running? Start it with `geoloc up`"
                    ) from None
                self.stats.failures[error.code().name] += 1
                self.stats.failure_examples.setdefault(error.code().name, f"{record.image}: {error.details()}")
                return None
        return self._record(record, response)

    def _count_retry(self, error, wait_s: float) -> None:
        self.stats.retries += 1

    def _record(self, record: LabelledImage, response) -> Prediction:
        from geoloc.geo.sphere import haversine_km
        from geoloc.v1 import orchestrator_pb2

        best = response.best_guess
        error_km = float(haversine_km(record.lat, record.lon, best.lat_deg, best.lon_deg))
        stats = self.stats
        stats.answered += 1
        stats.within_radius_50 += error_km <= response.radius_50_km
        stats.within_radius_90 += error_km <= response.radius_90_km
        stats.total_ms.append(response.timings.total_ms)
        experts = {}
        for output in response.expert_outputs:
            name = EXPERT_NAMES.get(output.expert)
            if name is None:
                continue
            stats.statuses.setdefault(name, Counter())[
                orchestrator_pb2.ExpertStatus.Name(output.status).removeprefix("EXPERT_STATUS_")
            ] += 1
            if output.status == orchestrator_pb2.EXPERT_STATUS_OK and output.points:
                experts[name] = (output.points[0].lat_deg, output.points[0].lon_deg)
        return Prediction(image=record.image, lat=best.lat_deg, lon=best.lon_deg, experts=experts)


def format_markdown(report: Report, stats: LiveStats) -> str:
    """The fused answer and each expert side by side as a markdown table, then calibration and throughput."""
    heads = ["answer", "n", *(f"≤{t:g} km %" for t in report.thresholds_km), "GeoScore", "median km", "OK"]
    rows = [_row(FUSED_LABEL, report.metrics, f"{stats.answered}/{stats.sent}")]
    for name, metrics in (report.experts or {}).items():
        rows.append(_row(name, metrics, f"{stats.ok_count(name)}/{stats.answered}", len(report.thresholds_km)))
    lines = [
        f"dataset: {report.dataset} (split {report.split}); source: {report.source}",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    calibration = stats.to_dict()["calibration"]
    if stats.answered:
        lines.append(
            f"calibration of the fused radii: {100 * calibration['within_radius_50']:.1f} % of photos within "
            f"radius_50 (ideal 50 %), {100 * calibration['within_radius_90']:.1f} % within radius_90 (ideal 90 %)"
        )
    status_text = "; ".join(
        f"{name} " + ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        for name, counts in stats.statuses.items()
        if counts
    )
    lines.append(f"expert statuses: {status_text or 'none'}")
    rate = f"{stats.answered / stats.wall_s:.2f} photos/s" if stats.wall_s > 0 else "-"
    failed = ", ".join(f"{code} {count}" for code, count in sorted(stats.failures.items())) or "none"
    lines.append(f"throughput: {stats.answered} photos in {stats.wall_s:.1f} s ({rate}); failed calls: {failed}")
    lines.extend(f"  first {code}: {message}" for code, message in sorted(stats.failure_examples.items()))
    lines.append(
        "experts' rows score each expert's own top point; OK: calls where the expert answered / photos answered"
    )
    return "\n".join(lines)


def _row(label: str, metrics, ok: str, n_thresholds: int = 0) -> list[str]:
    if metrics is None:
        return [label, "0", *(["-"] * (n_thresholds + 2)), ok]
    return [
        label,
        str(metrics.n),
        *(f"{100 * a:.1f}" for a in metrics.accuracy),
        f"{metrics.geoscore:.0f}",
        f"{metrics.median_km:,.0f}",
        ok,
    ]


def live_report_dict(report: Report, stats: LiveStats) -> dict[str, Any]:
    """The harness's report as JSON, with the live run's calibration, statuses and timings under "live"."""
    return {**report.to_dict(), "live": stats.to_dict()}

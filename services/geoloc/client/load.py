"""Driving `Locate` with N concurrent clients for T seconds, and what came back.

`drive` is the load generator behind `bench/load.py` and the fault tests: each client sends the
next photo as soon as its previous answer arrives, so the offered load follows what the suite can
take; a client refused by the orchestrator's admission limit waits the delay it was given (with
jitter) before its next call, as a retrying client would. Every call is recorded (when it started,
how long it took, its status code, and each expert's status in an OK answer), so that a fault
injected during the run can be read off the records that overlap it. It only ever calls loopback
addresses: a load run is a measurement on one machine, not a tool to point at someone's service.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np

from geoloc.common.errors import retry_delay_s
from geoloc.common.retry import is_overloaded, retry_wait_s
from geoloc.experts import EXPERT_NAMES
from geoloc.v1 import orchestrator_pb2, orchestrator_pb2_grpc

MAX_CLIENTS = 64
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class CallRecord:
    started_s: float  # since the run began
    latency_ms: float
    code: str  # grpc.StatusCode name
    experts: dict[str, str] = field(default_factory=dict)  # expert -> ExpertStatus name, for OK answers
    message: str = ""
    # What the orchestrator itself cost: end to end minus its wait on the other services
    # (experts_path_ms), as it timed them (validation, EXIF, fan-out, fusion, place names, two hops).
    overhead_ms: float = float("nan")

    @property
    def ended_s(self) -> float:
        return self.started_s + self.latency_ms / 1000

    @property
    def partial(self) -> bool:
        """An OK answer that some asked expert did not contribute to."""
        return self.code == "OK" and any(
            s not in ("EXPERT_STATUS_OK", "EXPERT_STATUS_SKIPPED") for s in self.experts.values()
        )


@dataclass
class LoadReport:
    clients: int
    seconds: float
    records: list[CallRecord]
    began: float  # time.perf_counter() when the run began: records' times count from it

    def codes(self) -> Counter[str]:
        return Counter(r.code for r in self.records)

    def throughput(self) -> float:
        """OK answers per second."""
        return self.codes()["OK"] / self.seconds

    def latency_ms(self, percentile: float) -> float:
        latencies = [r.latency_ms for r in self.records if r.code == "OK"]
        return float(np.percentile(latencies, percentile)) if latencies else float("nan")

    def overhead_ms(self, percentile: float) -> float:
        overheads = [r.overhead_ms for r in self.records if r.code == "OK"]
        return float(np.percentile(overheads, percentile)) if overheads else float("nan")

    def expert_statuses(self) -> Counter[str]:
        """'expert STATUS' -> count over the OK answers."""
        return Counter(
            f"{expert} {status.removeprefix('EXPERT_STATUS_')}"
            for r in self.records
            for expert, status in r.experts.items()
        )

    def partial_share(self) -> float:
        ok = [r for r in self.records if r.code == "OK"]
        return sum(r.partial for r in ok) / len(ok) if ok else float("nan")


def experts_path_ms(answer: orchestrator_pb2.LocateResponse) -> float:
    """How long the answer waited on other services: the embedding call then the slowest embedding
    expert, or the text expert (started with the embedding call), whichever took longer. What the
    call took beyond it is the orchestrator's own overhead."""
    text = orchestrator_pb2.EXPERT_TEXT
    slowest = max((o.latency_ms for o in answer.expert_outputs if o.expert != text), default=0.0)
    reading = max((o.latency_ms for o in answer.expert_outputs if o.expert == text), default=0.0)
    return max(answer.timings.embed_ms + slowest, reading)


def is_loopback_target(target: str) -> bool:
    """Whether every address a gRPC target names is on this machine (127.0.0.0/8, ::1, localhost).

    Accepts 'host:port', '[v6]:port', and the 'ipv4:' / 'ipv6:' / 'dns:///' forms with several
    comma-separated addresses that round-robin channels use.
    """
    for scheme in ("ipv4:", "ipv6:", "dns:///", "dns:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    hosts = []
    for address in target.split(","):
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
        hosts.append(host.strip("[]"))
    try:
        resolved = [info[4][0] for host in hosts for info in socket.getaddrinfo(host, None)]
    except socket.gaierror:
        return False
    return bool(resolved) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in resolved)


def checked_load(target: str, clients: int, seconds: float) -> None:
    """Raises ValueError unless the run is bounded and stays on this machine."""
    if not is_loopback_target(target):
        raise ValueError(f"{target} is not a loopback address; load runs only go to this machine")
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be in [1, {MAX_CLIENTS}], got {clients}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS:.0f}], got {seconds}")


async def drive(
    channel: grpc.aio.Channel,
    target: str,
    photos: list[bytes],
    clients: int,
    seconds: float,
    timeout_s: float = 30.0,
    options: orchestrator_pb2.LocateOptions | None = None,
    stop: asyncio.Event | None = None,
) -> LoadReport:
    """`clients` callers send Locate over `channel` (to `target`) back to back for `seconds`, or
    until `stop` is set if that comes first.

    Calls still in flight when the time is up are awaited and recorded, so that nothing the run
    started goes uncounted.
    """
    checked_load(target, clients, seconds)
    if not photos:
        raise ValueError("no photos to send")
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    began = time.perf_counter()
    stop_at = began + seconds
    records: list[CallRecord] = []
    sent = 0
    rng = random.Random(0)

    async def client() -> None:
        nonlocal sent
        while time.perf_counter() < stop_at and not (stop is not None and stop.is_set()):
            photo = photos[sent % len(photos)]
            sent += 1
            started = time.perf_counter()
            request = orchestrator_pb2.LocateRequest(image=photo, options=options)
            try:
                answer = await stub.Locate(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                records.append(
                    CallRecord(
                        started - began,
                        1000 * (time.perf_counter() - started),
                        error.code().name,
                        message=error.details() or "",
                    )
                )
                if is_overloaded(error):  # refused by the admission limit: come back when it says
                    await asyncio.sleep(retry_wait_s(retry_delay_s(error), 1, rng))
                continue
            latency_ms = 1000 * (time.perf_counter() - started)
            experts = {
                EXPERT_NAMES[o.expert]: orchestrator_pb2.ExpertStatus.Name(o.status)
                for o in answer.expert_outputs
                if o.expert in EXPERT_NAMES
            }
            records.append(
                CallRecord(
                    started - began,
                    latency_ms,
                    "OK",
                    experts,
                    overhead_ms=latency_ms - experts_path_ms(answer),
                )
            )

    await asyncio.gather(*(client() for _ in range(clients)))
    return LoadReport(clients, time.perf_counter() - began, sorted(records, key=lambda r: r.started_s), began)

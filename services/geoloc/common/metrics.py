"""Prometheus metrics of one gRPC server, served on their own port.

Metric names follow go-grpc-prometheus (`grpc_server_handled_total`, ...), so the
dashboards and alerts operators already have for gRPC servers work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import HTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

# From sub-millisecond loopback calls up to the slowest sampler runs.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RPC_LABELS = ("grpc_service", "grpc_method")
# Batches of one request up to the largest any service is configured for.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class ServerMetrics:
    """The metrics of one server, in a registry of its own so several servers can share a process."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.started = Counter("grpc_server_started", "Calls started.", _RPC_LABELS, registry=r)
        self.handled = Counter(
            "grpc_server_handled", "Calls finished, by status code.", (*_RPC_LABELS, "grpc_code"), registry=r
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the call's arrival to its status, in seconds.",
            _RPC_LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.in_flight = Gauge("grpc_server_in_flight", "Calls being handled now.", _RPC_LABELS, registry=r)
        self.ready = Gauge(
            "geoloc_service_ready", "1 when the service reports SERVING on its health check.", ("service",), registry=r
        )
        # The batchers' (geoloc.common.batching), labelled with each batcher's name: one family for
        # all the services a server mounts.
        self.batch_queue = Histogram(
            "geoloc_batch_queue_seconds",
            "Time from a call's arrival at the batcher to the start of the batch it runs in, in seconds.",
            ("batcher",),
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "geoloc_batch_size", "Requests per batch run.", ("batcher",), buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def for_method(self, service: str, method: str) -> MethodMetrics:
        """The children of one method's labels, resolved once rather than on every call."""
        return MethodMetrics(
            started=self.started.labels(service, method),
            in_flight=self.in_flight.labels(service, method),
            latency=self.latency.labels(service, method),
            handled=lambda code_name: self.handled.labels(service, method, code_name),
        )

    def batcher(self, name: str) -> BatchMetrics:
        """The metrics of the batcher `name`."""
        return BatchMetrics(queue_seconds=self.batch_queue.labels(name), batch_size=self.batch_size.labels(name))

    def set_ready(self, service: str, ready: bool) -> None:
        """Readiness of one service; the empty name (the whole server, in gRPC health) is labelled "server"."""
        self.ready.labels(service or "server").set(1 if ready else 0)


@dataclass(frozen=True)
class BatchMetrics:
    """One batcher's metrics: each call's wait for its batch, and each batch's size."""

    queue_seconds: Histogram
    batch_size: Histogram


@dataclass(frozen=True)
class MethodMetrics:
    """One method's metrics; `handled` takes the status code name."""

    started: Counter
    in_flight: Gauge
    latency: Histogram
    handled: Callable[[str], Counter]

    def call_started(self) -> None:
        self.started.inc()
        self.in_flight.inc()

    def call_finished(self, code_name: str, seconds: float) -> None:
        self.in_flight.dec()
        self.handled(code_name).inc()
        self.latency.observe(seconds)


def start_metrics_http_server(metrics: ServerMetrics, host: str, port: int) -> tuple[HTTPServer, int]:
    """Serves /metrics in a background thread; returns the HTTP server and the port it bound."""
    httpd, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return httpd, httpd.server_port

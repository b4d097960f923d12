"""One health probe per component: SERVING, NOT_SERVING or UNREACHABLE.

The geoloc services answer grpc.health.v1 for the whole server (the empty name), SERVING once
warmed up. Triton is asked over its own gRPC API whether the server and each of its models
are ready, because a live Triton with a model still loading cannot serve the embedding service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import grpc

Health = Literal["SERVING", "NOT_SERVING", "UNREACHABLE"]
SERVING: Health = "SERVING"
NOT_SERVING: Health = "NOT_SERVING"
UNREACHABLE: Health = "UNREACHABLE"

# gRPC backs off up to 2 minutes between reconnects to a port that refused; a probe polling a
# service that takes a minute to start must notice it within a second, not minutes later.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Probe:
    """Checks one component at `address`; keeps its channel open between checks. Close it after."""

    def __init__(self, address: str, kind: str = "grpc", models: Sequence[str] = ()):
        self.address = address
        self.kind = kind
        self.models = tuple(models)
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)

    def check(self, timeout_s: float = 2.0) -> Health:
        """The component's health now; any failed call (refused, timed out, not a health server) is UNREACHABLE."""
        try:
            return self._check_triton(timeout_s) if self.kind == "triton" else self._check_grpc(timeout_s)
        except grpc.RpcError:
            return UNREACHABLE

    def _check_grpc(self, timeout_s: float) -> Health:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        answer = health_pb2_grpc.HealthStub(self._channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
        return SERVING if answer.status == health_pb2.HealthCheckResponse.SERVING else NOT_SERVING

    def _check_triton(self, timeout_s: float) -> Health:
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        if not stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout_s).ready:
            return NOT_SERVING
        for name in self.models:
            if not stub.ModelReady(service_pb2.ModelReadyRequest(name=name), timeout=timeout_s).ready:
                return NOT_SERVING
        return SERVING

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

"""Client channels to geoloc services, made one way everywhere.

Every channel passes the request id on, has the same message-size limits as the
servers, keeps idle connections alive, and retries UNAVAILABLE (only that code: other
failures are answers, not accidents) through the gRPC service config.
"""

from __future__ import annotations

import json

import grpc

from geoloc.common.interceptors import RequestIdClientInterceptor
from geoloc.common.settings import MIB
from geoloc.common.tls import ClientTls
from geoloc.common.tracing import client_interceptors

# First and longest wait between attempts to reconnect to a dependency that went away.
RECONNECT_BACKOFF_MS = (250, 2000)


def reconnect_backoff_options() -> list[tuple[str, int]]:
    """Channel options for RECONNECT_BACKOFF_MS: gRPC's default backoff grows to 120 s, and a
    restarted dependency should be used again within seconds."""
    first, longest = RECONNECT_BACKOFF_MS
    return [
        ("grpc.initial_reconnect_backoff_ms", first),
        ("grpc.min_reconnect_backoff_ms", first),
        ("grpc.max_reconnect_backoff_ms", longest),
    ]


def unavailable_retry_policy(
    max_attempts: int = 3, initial_backoff_s: float = 0.05, max_backoff_s: float = 1.0
) -> dict:
    """A service config that retries every method on UNAVAILABLE, with exponential backoff, and
    spreads calls round robin over the target's addresses that report SERVING.

    Health-checked round robin is what makes a graceful shutdown lose nothing: a replica that
    starts draining turns NOT_SERVING, and clients stop picking it before it refuses calls.
    """
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": f"{initial_backoff_s}s",
                    "maxBackoff": f"{max_backoff_s}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }


def create_channel(
    target: str,
    *,
    max_message_bytes: int = 20 * MIB,
    keepalive_time_s: float = 30.0,
    service_config: dict | None = None,
    interceptors: tuple = (),
    tls: ClientTls | None = None,
) -> grpc.aio.Channel:
    """An aio channel to `target` ('host:port', or 'dns:///name:port' for several replicas).

    Plaintext without `tls`; with it, TLS trusting only `tls.ca_file`, presenting the client
    certificate when it has one (mutual TLS). The credentials' files are read here.
    """
    config = service_config if service_config is not None else unavailable_retry_policy()
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.enable_retries", 1),
        *reconnect_backoff_options(),
        ("grpc.service_config", json.dumps(config)),
    ]
    interceptors = [RequestIdClientInterceptor(), *client_interceptors(), *interceptors]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=options + tls.channel_options(), interceptors=interceptors
    )

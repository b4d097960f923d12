"""The one server interceptor every service runs behind, and the client one that passes request ids on.

The server interceptor wraps each unary call with, in order: the request id (bound for
logs and downstream calls), a readiness gate (UNAVAILABLE until the service's model is
warm), metrics, an access-log line, and the mapping of exceptions to status codes
(`errors.map_exception`). Streaming calls (health Watch, reflection) pass through
untouched: every geoloc RPC is unary.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import grpc

from geoloc.common.errors import NotReady, map_exception
from geoloc.common.logs import (
    REQUEST_ID_KEY,
    bind_request_id,
    current_request_id,
    get_logger,
    new_request_id,
    request_id_from_metadata,
    unbind_request_id,
)
from geoloc.common.metrics import ServerMetrics


def split_method(full_method: str) -> tuple[str, str]:
    """'/geoloc.v1.GalleryService/Search' -> ('geoloc.v1.GalleryService', 'Search')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class ServerRuntimeInterceptor(grpc.aio.ServerInterceptor):
    """Request ids, readiness, metrics, access logs and error mapping for unary calls."""

    def __init__(
        self,
        metrics: ServerMetrics,
        is_ready: Callable[[str], bool],
        gated_services: frozenset[str],
        log_requests: bool = True,
    ):
        self._metrics = metrics
        self._is_ready = is_ready
        self._gated = gated_services
        self._log_requests = log_requests
        self._log = get_logger("geoloc.rpc")
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        # The wrapper depends only on the method, so it is built once per method; what
        # varies per call (metadata, deadline) is read from the call's context.
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is None:
            wrapped = self._wrap(handler_call_details.method, handler)
            self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, method = split_method(full_method)
        inner = handler.unary_unary
        gated = service in self._gated
        metrics = self._metrics.for_method(service, method)

        async def behavior(request, context: grpc.aio.ServicerContext):
            request_id = request_id_from_metadata(context.invocation_metadata())
            token = bind_request_id(request_id)
            started = time.perf_counter()
            metrics.call_started()
            code = grpc.StatusCode.OK
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            try:
                if gated and not self._is_ready(service):
                    raise NotReady(f"{service} is not ready: its model or index is still loading")
                result = inner(request, context)
                if inspect.isawaitable(result):
                    result = await result
                code = context.code() or grpc.StatusCode.OK
                return result
            except grpc.aio.AbortError:
                # The handler aborted with a status of its own choosing; keep it.
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                remaining = context.time_remaining()
                code = (
                    grpc.StatusCode.DEADLINE_EXCEEDED
                    if remaining is not None and remaining <= 0
                    else grpc.StatusCode.CANCELLED
                )
                raise
            except Exception as exc:
                mapped = map_exception(exc)
                code = mapped.status.code
                if mapped.log_traceback:
                    self._log.exception("rpc_failed", grpc_service=service, grpc_method=method)
                trailing = (*mapped.status.trailing_metadata, (REQUEST_ID_KEY, request_id))
                await context.abort(code, mapped.status.details, trailing)
            finally:
                elapsed = time.perf_counter() - started
                metrics.call_finished(code.name, elapsed)
                if self._log_requests:
                    self._log.info(
                        "rpc",
                        grpc_service=service,
                        grpc_method=method,
                        grpc_code=code.name,
                        duration_ms=round(elapsed * 1000, 3),
                        peer=context.peer(),
                    )
                unbind_request_id(token)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class RequestIdClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the request id of the call being served (or a fresh one) with every outgoing call."""

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = list(client_call_details.metadata or ())
        if not any(key == REQUEST_ID_KEY for key, _ in metadata):
            metadata.append((REQUEST_ID_KEY, current_request_id() or new_request_id()))
        details = client_call_details._replace(metadata=grpc.aio.Metadata(*metadata))
        return await continuation(details, request)

"""The one server interceptor every service runs behind, and the client one that passes request ids on.

The server interceptor wraps each unary call with, in order: the request id (bound for
logs and downstream calls), a readiness gate (UNAVAILABLE until the service's model is
warm), bounded admission (RESOURCE_EXHAUSTED with a RetryInfo delay beyond `max_in_flight`
calls at once: geoloc.common.admission), metrics, an access-log line, a server-side time limit
(`max_call_s`), and the mapping of exceptions to status codes (`errors.map_exception`).
Streaming calls (health Watch, reflection) pass through untouched: every geoloc RPC is unary.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable

import grpc

from geoloc.common.admission import Admission
from geoloc.common.errors import DeadlineExceeded, NotReady, map_exception
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
from geoloc.common.tracing import record_request_id


def split_method(full_method: str) -> tuple[str, str]:
    """'/geoloc.v1.GalleryService/Search' -> ('geoloc.v1.GalleryService', 'Search')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class ServerRuntimeInterceptor(grpc.aio.ServerInterceptor):
    """Request ids, readiness, metrics, access logs, a time limit and error mapping for unary calls.

    Each handler runs under asyncio.timeout(min(the client's remaining time, `max_call_s`)), so
    that a client that sets no deadline cannot hold a call, and what it holds, forever. When the
    server's limit fires first the call answers DEADLINE_EXCEEDED saying so; the server goes on
    serving. The timeout cancels the handler's coroutine only: work it handed to a thread
    (asyncio.to_thread) runs on until it finishes, which is why each service also bounds its
    work through its request limits (samples, steps, beam width, photo size).
    """

    def __init__(
        self,
        metrics: ServerMetrics,
        is_ready: Callable[[str], bool],
        gated_services: frozenset[str],
        log_requests: bool = True,
        max_call_s: float | None = None,
        admission: Admission | None = None,
    ):
        self._metrics = metrics
        self._is_ready = is_ready
        self._gated = gated_services
        self._log_requests = log_requests
        self._max_call_s = max_call_s
        self._admission = admission or Admission(None, "this server")
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

    def _limit_s(self, context: grpc.aio.ServicerContext) -> tuple[float | None, bool]:
        """How long this call may run, and whether that is the server's limit rather than the client's."""
        remaining = context.time_remaining()
        if self._max_call_s is None:
            return remaining, False
        if remaining is None or self._max_call_s < remaining:
            return self._max_call_s, True
        return remaining, False

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, method = split_method(full_method)
        inner = handler.unary_unary
        gated = service in self._gated
        metrics = self._metrics.for_method(service, method)

        async def behavior(request, context: grpc.aio.ServicerContext):
            request_id = request_id_from_metadata(context.invocation_metadata())
            token = bind_request_id(request_id)
            record_request_id(request_id)
            started = time.perf_counter()
            metrics.call_started()
            code = grpc.StatusCode.OK
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            limit_s, server_limits = self._limit_s(context)
            timeout = asyncio.timeout(limit_s)
            try:
                if gated and not self._is_ready(service):
                    raise NotReady(f"{service} is not ready: its model or index is still loading")
                with self._admission.admitted() if gated else contextlib.nullcontext():
                    async with timeout:
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
                if isinstance(exc, TimeoutError) and timeout.expired():
                    # Our own limit fired, not a timeout inside the handler.
                    if server_limits:
                        self._log.warning(
                            "rpc_max_call_s_reached",
                            grpc_service=service,
                            grpc_method=method,
                            max_call_s=self._max_call_s,
                        )
                        exc = DeadlineExceeded(f"the server's limit of {self._max_call_s:g} s per call was reached")
                    else:
                        exc = DeadlineExceeded("the caller's deadline passed")
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

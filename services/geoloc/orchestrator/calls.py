"""Calls from the orchestrator's handler to another service, with that service's errors mapped to
the handler's own (ExpertClients' expert calls map theirs to a per-expert status instead: experts.py)."""

from __future__ import annotations

import time

import grpc

from geoloc.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotReady, retry_delay_s


async def called(service: str, field: str | None, deadline: float, timeout_s: float, method, request):
    """`method(request)` of another service within min(timeout_s, the time left before `deadline`),
    its errors turned into this call's:
    - INVALID_ARGUMENT names the caller's `field`, when the request carried the caller's input;
    - with no `field` (the request was built here), INVALID_ARGUMENT and FAILED_PRECONDITION mean
      that the deployment's parts do not fit each other: FAILED_PRECONDITION;
    - DEADLINE_EXCEEDED stays; anything else is UNAVAILABLE, with a retry delay."""
    timeout = min(timeout_s, deadline - time.perf_counter())
    if timeout <= 0:
        raise DeadlineExceeded(f"the caller's deadline left no time to call the {service} service")
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        code, details = error.code(), error.details()
        if code == grpc.StatusCode.INVALID_ARGUMENT and field is not None:
            raise InvalidArgument(field, details.split(": ", 1)[-1]) from None
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            raise FailedPrecondition(f"the {service} service refused: {details}") from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(f"the {service} service did not answer within the caller's deadline") from None
        raise NotReady(
            f"the {service} service failed: {code.name}: {details}", retry_after_s=retry_delay_s(error) or 1.0
        ) from None

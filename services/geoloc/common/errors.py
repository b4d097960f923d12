"""Exceptions that service code raises, and the gRPC status each one becomes.

Handlers raise these instead of calling `context.abort`, so that the one server
interceptor maps every failure the same way (and logs what a client must not see).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

GENERIC_INTERNAL_MESSAGE = "internal error; the server logged the details under this call's x-request-id"


class ServiceError(Exception):
    """Base of the errors a handler may raise on purpose; each maps to one status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def to_status(self) -> grpc.Status:
        return _status(self.code, str(self))


class InvalidArgument(ServiceError):
    """The request is wrong: INVALID_ARGUMENT, naming the field and what is wrong with it.

    The status also carries a google.rpc.BadRequest detail with the field violation, for
    clients that read rich error details.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def to_status(self) -> grpc.Status:
        violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.problem)
        return _status(self.code, str(self), error_details_pb2.BadRequest(field_violations=[violation]))


def named_enum_value(field: str, value: int, names: dict[int, str], default: str, enum: str) -> str:
    """The name of a request's enum value, `default` when unset (0, proto3's UNSPECIFIED); InvalidArgument
    naming `field` for a number the enum `enum` does not define."""
    if value == 0:
        return default
    if value not in names:
        raise InvalidArgument(field, f"{value} is not a {enum}")
    return names[value]


def defaulted_in_range(field: str, value: int, default: int, low: int, high: int) -> int:
    """A request's count where 0 (proto3's unset) means `default`: the value to use, or InvalidArgument
    naming `field` unless it lies in [low, high]."""
    chosen = value or default
    if not low <= chosen <= high:
        raise InvalidArgument(field, f"must be in [{low}, {high}] (0 for {default}), got {value}")
    return chosen


class _RetryLater(ServiceError):
    """A refusal that says when to try again: the status carries a google.rpc.RetryInfo detail."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def to_status(self) -> grpc.Status:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        return _status(self.code, str(self), error_details_pb2.RetryInfo(retry_delay=delay))


class NotReady(_RetryLater):
    """The service cannot answer yet (model loading, dependency down): UNAVAILABLE, so clients retry
    after the RetryInfo delay."""

    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(ServiceError):
    """The request is well formed but this deployment cannot serve it (say, a model not loaded)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    """The request is too large or the server too busy for it: RESOURCE_EXHAUSTED."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Overloaded(_RetryLater):
    """The service already holds as many calls as it admits: RESOURCE_EXHAUSTED at once, with a
    RetryInfo delay. The delay is what tells a client that retrying helps; gRPC's own refusals
    (too many streams, a message too large) carry none."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServiceError):
    """The work could not finish within the caller's deadline: DEADLINE_EXCEEDED."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass(frozen=True)
class MappedError:
    """The status a failure maps to, and whether its details belong in the log rather than the reply."""

    status: grpc.Status
    log_traceback: bool


# Failures of our own downstream calls that the caller can act on keep their code; any
# other downstream failure is our bug and becomes INTERNAL.
_PASSED_THROUGH_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def map_exception(exc: BaseException) -> MappedError:
    """The status for an exception that escaped a handler."""
    if isinstance(exc, ServiceError):
        return MappedError(exc.to_status(), log_traceback=False)
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return MappedError(_status(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"), log_traceback=False)
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PASSED_THROUGH_CODES:
        message = f"a dependency answered {exc.code().name}: {exc.details()}"
        return MappedError(_status(exc.code(), message), log_traceback=False)
    return MappedError(_status(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE), log_traceback=True)


def retry_delay_s(error: grpc.aio.AioRpcError) -> float | None:
    """The retry delay a refusal (UNAVAILABLE, RESOURCE_EXHAUSTED) suggested in its google.rpc.RetryInfo
    detail, if any."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def _status(code: grpc.StatusCode, message: str, *details) -> grpc.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    return rpc_status.to_status(proto)

"""Calling servers in tests, one helper per idea for every test file: serving services in this
process (and sending them requests one by one, or serving from a thread of their own), and what a
refusal must say."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

INVALID = grpc.StatusCode.INVALID_ARGUMENT


class Answers(list):
    """Each call's answer, or the grpc.aio.AioRpcError it got, in order; `seconds[i]` is how long
    the i-th call took, as its caller saw it."""

    seconds: list[float]


def call_each(
    settings,
    spec,
    stub_class,
    rpc: str,
    requests: Iterable,
    timeout_s: float = 60,
    ready_timeout_s: float = 120,
    between: Callable[[int], object] | None = None,
) -> Answers:
    """Serves `spec` in-process on loopback, sends each request in turn, stops the server.

    A request goes to `rpc`, or is an (rpc, request) pair for another of the stub's methods.
    `between(i)`, when given, runs (in a thread) after the i-th call: to kill a process mid-run, say.
    """
    from geoloc.common.server import serving

    async def scenario() -> Answers:
        results = Answers()
        results.seconds = []
        async with serving(settings, [spec], ready_timeout_s=ready_timeout_s) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = stub_class(channel)
                for i, item in enumerate(requests):
                    name, request = item if isinstance(item, tuple) else (rpc, item)
                    started = time.perf_counter()
                    try:
                        results.append(await getattr(stub, name)(request, timeout=timeout_s))
                    except grpc.aio.AioRpcError as error:
                        results.append(error)
                    results.seconds.append(time.perf_counter() - started)
                    if between is not None:
                        await asyncio.to_thread(between, i)
        return results

    return asyncio.run(scenario())


def call_together(settings, spec, stub_class, rpc: str, requests: Iterable, timeout_s: float = 120) -> Answers:
    """Serves `spec` in-process on loopback and sends all the requests at once (to `rpc`), so that
    they queue up together; answers (or errors) in the requests' order."""
    from geoloc.common.server import serving

    async def scenario() -> Answers:
        async with serving(settings, [spec]) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = getattr(stub_class(channel), rpc)
                results = Answers(
                    await asyncio.gather(*(call(r, timeout=timeout_s) for r in requests), return_exceptions=True)
                )
        results.seconds = []
        return results

    return asyncio.run(scenario())


@contextmanager
def served_in_background(settings, specs, ready_timeout_s: float = 240) -> Iterator[int]:
    """`serving` the specs in an event loop of its own thread, so that this thread may make blocking
    calls or run asyncio.run itself; yields the port, and stops the server on exit."""
    from geoloc.common.server import serving

    port: Future = Future()
    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()

    async def serve() -> None:
        async with serving(settings, specs, ready_timeout_s, grace_s=0) as (_, bound):
            port.set_result(bound)
            await stopping.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as error:
            if port.done():
                raise
            port.set_exception(error)  # a start that failed: raised in the test's thread

    thread = threading.Thread(target=run, name="served-in-background", daemon=True)
    thread.start()
    try:
        yield port.result(ready_timeout_s + 60)
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(60)
        loop.close()


def refusal(call, request, timeout_s: float = 60) -> grpc.RpcError:
    """The error a blocking call gets; fails the test if the request was answered."""
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=timeout_s)
    return error.value


def assert_refused(error, field: str | None, problem: str = "", code: grpc.StatusCode = INVALID) -> None:
    """`error` is a refusal with `code` whose message holds `problem` and, where the request reached
    our code (`field` given), starts with the field; then the google.rpc.BadRequest detail of the
    rich status names that field and no other."""
    assert isinstance(error, grpc.RpcError), f"answered, not refused ({field}): {error}"
    assert error.code() == code, (error.code(), error.details())
    assert problem in error.details(), error.details()
    if field is None:
        return
    assert error.details().startswith(f"{field}: "), error.details()
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    violations = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations.extend(v.field for v in bad_request.field_violations)
    assert violations == [field], violations


def assert_each_refused(cases: Iterable[tuple[object, str]], errors: Iterable) -> None:
    """Each of `errors` refuses the request of its (request, field) case as INVALID_ARGUMENT naming its field."""
    for (_, field), error in zip(cases, errors, strict=True):
        assert_refused(error, field)


def default_statuses(fusion_weights: dict[str, float]) -> dict[int, int]:
    """What a Locate without options.experts reports per expert when every expert is deployed and
    answers: OK for those the fitted fusion weighs, SKIPPED for those it gives weight 0 (they
    cannot move the answer, so the orchestrator does not ask them by default)."""
    from geoloc.experts import EXPERT_ENUMS
    from geoloc.v1 import orchestrator_pb2

    ok, skipped = orchestrator_pb2.EXPERT_STATUS_OK, orchestrator_pb2.EXPERT_STATUS_SKIPPED
    return {enum: ok if fusion_weights.get(name, 0.0) > 0 else skipped for name, enum in EXPERT_ENUMS.items()}

"""Bounded admission and the clients' retry: a real server (the probe service behind the real
interceptor, on loopback) at its `max_in_flight` limit, and geoloc.common.retry against it."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest

from geoloc.common.admission import Admission
from geoloc.common.errors import Overloaded, retry_delay_s
from geoloc.common.retry import call_with_retry, is_overloaded, retry_wait_s
from geoloc.v1 import gallery_pb2_grpc
from tests.test_server_runtime import search, serving

pytestmark = pytest.mark.integration

SLOW = (("x-probe-delay-s", "0.6"),)


async def searched(stub, metadata=SLOW):
    return await stub.Search(search(), timeout=5, metadata=metadata)


def test_beyond_the_limit_calls_are_refused_at_once_with_a_retry_delay_and_the_admitted_ones_finish():
    async def scenario():
        async with serving(max_in_flight=2) as (_, channel):
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            admitted = [asyncio.create_task(searched(stub)) for _ in range(2)]
            await asyncio.sleep(0.2)  # both are in the handler now
            started = time.perf_counter()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Search(search(), timeout=5)
            refused_in_s = time.perf_counter() - started
            answers = await asyncio.gather(*admitted)
            after = await stub.Search(search(), timeout=5)  # a slot is free again
        return refused.value, refused_in_s, answers, after

    error, refused_in_s, answers, after = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 2 calls" in error.details()
    assert is_overloaded(error) and 0 < retry_delay_s(error) <= 5
    assert refused_in_s < 0.3, refused_in_s  # refused without waiting for a slot
    assert all(len(a.points) == 3 for a in answers) and len(after.points) == 3


def test_without_a_limit_every_call_is_admitted():
    async def scenario():
        async with serving(max_in_flight=None) as (_, channel):
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            return await asyncio.gather(*(stub.Search(search(), timeout=5, metadata=SLOW) for _ in range(6)))

    assert all(len(a.points) == 3 for a in asyncio.run(scenario()))


def test_a_refused_call_is_retried_after_the_delay_and_answered_and_other_errors_are_not_retried():
    async def scenario():
        async with serving(max_in_flight=1) as (_, channel):
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            busy = asyncio.create_task(searched(stub))
            await asyncio.sleep(0.2)
            retries = []
            answer = await call_with_retry(
                stub.Search, search(), 5.0, rng=random.Random(0), on_retry=lambda e, w: retries.append(w)
            )
            await busy
            with pytest.raises(grpc.aio.AioRpcError) as invalid:  # INVALID_ARGUMENT: sent once
                await call_with_retry(stub.Search, search(k=0), 5.0, on_retry=lambda e, w: retries.append(-1))
        return answer, retries, invalid.value

    answer, retries, invalid = asyncio.run(scenario())
    assert len(answer.points) == 3 and retries and -1 not in retries
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_refusal_outlasting_the_timeout_is_raised_within_it():
    async def scenario():
        async with serving(max_in_flight=1) as (_, channel):
            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            busy = asyncio.create_task(searched(stub, (("x-probe-delay-s", "2"),)))
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call_with_retry(stub.Search, search(), 0.8, rng=random.Random(0))
            took = time.perf_counter() - started
            await busy
        return refused.value, took

    error, took = asyncio.run(scenario())
    assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert took < 1.5, took


def test_grpcs_own_resource_exhausted_is_not_an_admission_refusal():
    """A message over the size limit is RESOURCE_EXHAUSTED without RetryInfo: retrying cannot help."""

    async def scenario():
        async with serving(max_receive_message_bytes=64 * 1024) as (_, channel):
            from geoloc.v1 import common_pb2, gallery_pb2

            stub = gallery_pb2_grpc.GalleryServiceStub(channel)
            big = gallery_pb2.SearchRequest(embedding=common_pb2.Embedding(values=[0.5] * 20_000), k=1)
            retries = []
            with pytest.raises(grpc.aio.AioRpcError) as too_big:
                await call_with_retry(stub.Search, big, 5.0, on_retry=lambda e, w: retries.append(w))
        return too_big.value, retries

    error, retries = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not is_overloaded(error) and not retries


def test_the_retry_delay_follows_the_measured_call_time_and_the_backoff_grows_with_jitter():
    admission = Admission(2, "probe", first_guess_s=0.5)
    assert admission.retry_after_s() == pytest.approx(0.25)
    for _ in range(3):
        with admission.admitted():
            pass
    assert admission.retry_after_s() < 0.25 and admission.in_flight == 0
    with admission.admitted(), admission.admitted(), pytest.raises(Overloaded):
        with admission.admitted():
            pass
    assert admission.refused == 1 and admission.in_flight == 0

    upper = [retry_wait_s(0.05, attempt, AlwaysOne()) for attempt in range(1, 10)]
    assert upper == sorted(upper) and upper[0] == pytest.approx(0.1) and upper[-1] == 5.0
    assert retry_wait_s(2.0, 1, AlwaysOne()) == 2.0  # the server's delay when it is the longer
    jittered = [retry_wait_s(1.0, 1, random.Random(seed)) for seed in range(20)]
    assert all(0.5 <= w <= 1.0 for w in jittered) and len(set(jittered)) == 20


class AlwaysOne(random.Random):
    """Jitter at its largest: the wait's upper end."""

    def random(self) -> float:
        return 1.0

"""Cross-request batching: geoloc.common.batching on its own, then the sampler and the tokens
services answering concurrent calls in shared batches, each answer the one it gets alone."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from geoloc.common.batching import Batcher
from geoloc.common.logs import bind_request_id, current_request_id, unbind_request_id
from geoloc.common.metrics import ServerMetrics
from geoloc.sampler.config import SamplerSettings
from geoloc.sampler.server import SamplerServicer, sampler_spec
from geoloc.tokens.config import TokensSettings
from geoloc.tokens.server import TokensServicer, tokens_spec
from geoloc.v1 import sampler_pb2, sampler_pb2_grpc, tokens_pb2, tokens_pb2_grpc
from tests.calls import call_each, call_together
from tests.servers import made_up_embedding, pooled_feature


class Recorder:
    """A batch function that records each batch it is given and takes `seconds` for it."""

    def __init__(self, seconds: float = 0.2, fail_on=None):
        self.batches: list[list] = []
        self.seconds, self.fail_on = seconds, fail_on
        self.lock = threading.Lock()

    def __call__(self, requests):
        with self.lock:
            self.batches.append(list(requests))
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in requests:
            raise RuntimeError(f"batch with {self.fail_on} failed")
        return [request * 10 for request in requests]


def run(scenario):
    return asyncio.run(scenario())


def test_requests_that_queue_behind_a_batch_run_together_as_the_next_and_a_lone_one_waits_for_nothing():
    recorder = Recorder(seconds=0.3)

    async def scenario():
        batcher = Batcher(recorder)
        started = time.perf_counter()
        lone = await batcher.submit(1)
        alone_s = time.perf_counter() - started
        first = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.05)  # the first batch is running now: the next ones queue behind it
        rest = await asyncio.gather(*(batcher.submit(r) for r in (3, 4, 5)))
        await batcher.close()
        return lone, alone_s, await first, rest

    lone, alone_s, first, rest = run(scenario)
    assert lone == 10 and first == 20 and rest == [30, 40, 50]
    assert recorder.batches == [[1], [2], [3, 4, 5]]
    assert alone_s < 0.3 + 0.15, alone_s  # the lone request ran at once, not after a batching delay


def test_each_calls_queue_time_and_its_batch_size_are_measured_and_the_worker_serves_no_ones_context():
    recorder = Recorder(seconds=0.3)
    metrics = ServerMetrics()
    seen_ids: list[str | None] = []

    def batch(requests):
        seen_ids.append(current_request_id())  # the worker's thread, in the worker task's context
        return recorder(requests)

    async def scenario():
        batcher = Batcher(batch, metrics=metrics.batcher("probe"))
        token = bind_request_id("first-caller")
        first = asyncio.create_task(batcher.submit(1))  # starts the worker
        unbind_request_id(token)
        await asyncio.sleep(0.05)
        await asyncio.gather(first, *(batcher.submit(r) for r in (2, 3)))  # 2 and 3 wait about 0.25 s
        await batcher.close()

    run(scenario)
    assert recorder.batches == [[1], [2, 3]]
    labels = {"batcher": "probe"}
    sample = lambda name: metrics.registry.get_sample_value(name, labels)
    assert sample("geoloc_batch_queue_seconds_count") == 3
    assert 0.4 < sample("geoloc_batch_queue_seconds_sum") < 0.3 + 2 * 0.3  # two waits of ~0.25 s, one of ~0
    assert sample("geoloc_batch_size_count") == 2 and sample("geoloc_batch_size_sum") == 3
    assert seen_ids == [None, None]  # not the id of the call that happened to start the worker


def test_only_requests_of_one_key_share_a_batch_and_the_others_keep_their_order():
    recorder = Recorder(seconds=0.2)

    async def scenario():
        batcher = Batcher(recorder, key=lambda r: r % 2)
        blocker = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        answers = await asyncio.gather(*(batcher.submit(r) for r in (1, 2, 3, 4, 5)))
        await blocker
        await batcher.close()
        return answers

    assert run(scenario) == [10, 20, 30, 40, 50]
    assert recorder.batches == [[0], [1, 3, 5], [2, 4]]


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_runs():
    recorder = Recorder(seconds=0.1, fail_on=3)

    async def scenario():
        batcher = Batcher(recorder, max_batch=2)
        blocker = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.03)
        outcomes = await asyncio.gather(*(batcher.submit(r) for r in (3, 4, 5)), return_exceptions=True)
        await blocker
        await batcher.close()
        return outcomes

    failed_3, failed_4, fine = run(scenario)
    assert isinstance(failed_3, RuntimeError) and isinstance(failed_4, RuntimeError) and fine == 50
    assert recorder.batches == [[1], [3, 4], [5]]


def test_a_caller_that_gave_up_is_left_out_of_the_batch():
    recorder = Recorder(seconds=0.2)

    async def scenario():
        batcher = Batcher(recorder)
        blocker = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(2))
        kept = asyncio.create_task(batcher.submit(3))
        await asyncio.sleep(0.01)
        gone.cancel()
        answer = await kept
        await blocker
        await batcher.close()
        return answer

    assert run(scenario) == 30 and recorder.batches == [[1], [3]]


def together_and_alone(settings, servicer_class, spec, stub_class, rpc: str, requests):
    """The answers to the requests sent all at once (checked to have shared a batch), and sent one by
    one to a fresh server."""
    servicer = servicer_class(settings)
    together = call_together(settings, spec(servicer), stub_class, rpc, requests)
    assert max(servicer._batcher.batch_sizes) > 1, servicer._batcher.batch_sizes
    alone = call_each(settings, spec(servicer_class(settings)), stub_class, rpc, requests)
    return together, alone


def latlon(points) -> np.ndarray:
    return np.array([[p.lat_deg, p.lon_deg] for p in points])


@pytest.mark.integration
@pytest.mark.parametrize("method", [sampler_pb2.SAMPLING_METHOD_FLOW, sampler_pb2.SAMPLING_METHOD_SH_DIFFUSION])
def test_concurrent_samples_share_batches_and_each_is_the_answer_it_gets_alone(method):
    """Six photos and seeds at once: they run in batches of more than one, and each photo's samples
    are the ones a lone call with its seed gets (the same noise, the same steps; float sums in a
    bigger matrix product may differ in their last bits)."""
    requests = [
        sampler_pb2.SampleRequest(
            embedding=made_up_embedding(pooled_feature(i)), method=method, n_samples=32, steps=8, seed=i
        )
        for i in range(6)
    ]
    settings = SamplerSettings(port=0, metrics_port=None, log_requests=False)
    service = (SamplerServicer, sampler_spec, sampler_pb2_grpc.SamplerServiceStub, "Sample")
    together, alone = together_and_alone(settings, *service, requests)
    for shared, single in zip(together, alone, strict=True):
        np.testing.assert_allclose(latlon(shared.samples), latlon(single.samples), atol=1e-3)
        assert shared.seed == single.seed


@pytest.mark.integration
def test_concurrent_beam_decodes_share_batches_and_each_is_the_answer_it_gets_alone():
    requests = [
        tokens_pb2.DecodeRequest(
            embedding=made_up_embedding(pooled_feature(i)),
            strategy=tokens_pb2.DECODE_STRATEGY_BEAM,
            beam_width=5,
        )
        for i in range(6)
    ]
    settings = TokensSettings(port=0, metrics_port=None, log_requests=False)
    service = (TokensServicer, tokens_spec, tokens_pb2_grpc.TokensServiceStub, "Decode")
    together, alone = together_and_alone(settings, *service, requests)
    for shared, single in zip(together, alone, strict=True):
        assert [c.cell_id for c in shared.cells] == [c.cell_id for c in single.cells]
        np.testing.assert_allclose(
            [c.probability for c in shared.cells], [c.probability for c in single.cells], atol=1e-4
        )

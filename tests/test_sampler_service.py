"""The sampler service on a real gRPC server with the shipped flow and SH-diffusion checkpoints."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest

from geoloc.sampler.config import SamplerSettings
from geoloc.sampler.server import SamplerServicer, sampler_spec
from geoloc.v1 import embedding_pb2, sampler_pb2, sampler_pb2_grpc
from tests.calls import assert_each_refused, call_each
from tests.servers import bad_embeddings, made_up_embedding

pytestmark = pytest.mark.integration  # every test serves the sampler on loopback

FLOW, SH = sampler_pb2.SAMPLING_METHOD_FLOW, sampler_pb2.SAMPLING_METHOD_SH_DIFFUSION


def call_all(requests, **settings):
    """Starts the service on port 0, sends each request in turn, stops it; answers or errors."""
    settings = SamplerSettings(port=0, metrics_port=None, log_requests=False, **settings)
    return call_each(
        settings, sampler_spec(SamplerServicer(settings)), sampler_pb2_grpc.SamplerServiceStub, "Sample", requests
    )


def request(values=None, backbone="efficientnet-lite2", **fields) -> sampler_pb2.SampleRequest:
    fields = {"n_samples": 64, "steps": 8, **fields}
    return sampler_pb2.SampleRequest(embedding=made_up_embedding(values, backbone), **fields)


def latlon(points) -> np.ndarray:
    return np.array([[p.lat_deg, p.lon_deg] for p in points])


@pytest.mark.parametrize("method", [FLOW, SH])
def test_the_same_seed_gives_the_same_answer_and_another_seed_another(method):
    first, again, other = call_all(
        [request(method=method, seed=7), request(method=method, seed=7), request(method=method, seed=8)]
    )
    np.testing.assert_array_equal(latlon(first.samples), latlon(again.samples))
    assert first.mean_log_density == again.mean_log_density and first.seed == 7
    assert not np.array_equal(latlon(first.samples), latlon(other.samples))


def test_an_answer_holds_samples_modes_and_localizability():
    (answer,) = call_all([request(method=SH, n_samples=100, seed=1)])
    samples, modes = latlon(answer.samples), latlon(answer.modes)
    assert len(samples) == 100 and all(p.weight == pytest.approx(0.01) and p.radius_km == 0 for p in answer.samples)
    assert np.all(np.abs(samples[:, 0]) <= 90) and np.all(np.abs(samples[:, 1]) <= 180)
    weights = np.array([m.weight for m in answer.modes])
    assert len(modes) >= 1 and weights.sum() == pytest.approx(1.0) and np.all(weights > 0)
    assert all(m.radius_km > 0 for m in answer.modes) and math.isfinite(answer.mean_log_density)
    assert (
        answer.method == SH and answer.model.name == "sampler-sh/efficientnet-lite2" and len(answer.model.version) == 12
    )


def test_an_unset_seed_is_drawn_and_returned_so_that_the_call_can_be_reproduced():
    (drawn,) = call_all([request(method=FLOW)])
    (replay,) = call_all([request(method=FLOW, seed=drawn.seed)])
    np.testing.assert_array_equal(latlon(drawn.samples), latlon(replay.samples))


def test_unset_fields_take_the_servers_defaults():
    (answer,) = call_all([sampler_pb2.SampleRequest(embedding=request().embedding, seed=3)], default_samples=40)
    assert answer.method == FLOW and len(answer.samples) == 40


def test_guidance_sharpens_the_samples():
    """ω = 4 pushes the samples toward the condition's modes: the kernel estimate grows denser."""
    plain, guided = call_all(
        [
            request(method=FLOW, n_samples=256, steps=16, guidance=0.0, seed=2),
            request(method=FLOW, n_samples=256, steps=16, guidance=4.0, seed=2),
        ]
    )
    assert guided.mean_log_density > plain.mean_log_density


BAD = [
    (request(n_samples=-1), "n_samples"),
    (request(n_samples=1), "n_samples"),
    (request(n_samples=4097), "n_samples"),
    (request(steps=-3), "steps"),
    (request(steps=1001), "steps"),
    (request(n_samples=4096, steps=100), "n_samples"),
    (request(guidance=-0.5), "guidance"),
    (request(guidance=float("nan")), "guidance"),
    (request(guidance=21.0), "guidance"),
    (request(method=7), "method"),
    *bad_embeddings(request),
]


def test_bad_requests_get_invalid_argument_naming_the_field_and_the_server_keeps_serving():
    *refused, good = call_all([r for r, _ in BAD] + [request(seed=1)])
    assert_each_refused(BAD, refused)
    assert len(good.samples) == 64


def test_a_method_without_a_checkpoint_is_refused_as_a_failed_precondition():
    error, served = call_all([request(method=SH), request(method=FLOW, seed=1)], sh_checkpoint=None)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "'sh'" in error.details()
    assert len(served.samples) == 64


def test_a_real_photos_embedding_samples_through_both_methods(embedding_stub, photos):
    """The embedding service's answer for a real photo, on Triton, is a feature both samplers take."""
    embedded = embedding_stub.Embed(embedding_pb2.EmbedRequest(image=photos[0].read_bytes()), timeout=60).embedding
    flow, sh = call_all(
        [sampler_pb2.SampleRequest(embedding=embedded, n_samples=64, steps=8, method=m, seed=0) for m in (FLOW, SH)]
    )
    assert len(flow.samples) == len(sh.samples) == 64 and flow.modes and sh.modes

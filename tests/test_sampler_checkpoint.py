"""Sampler checkpoints: what is saved is what is served, for both methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoloc.artifacts.checkpoints import half_precision_weights
from geoloc.sampler.model import LocationSampler, build_network, load_sampler, save_sampler

SMALL = {"flow": {"width": 32, "depth": 2}, "sh": {"degree": 8, "width": 32, "depth": 2}}


@pytest.mark.parametrize("method", ["flow", "sh"])
def test_a_saved_sampler_loads_and_samples_as_its_half_precision_original(tmp_path, method):
    torch.manual_seed(0)
    network = build_network(method, {"embedding_dim": 6, **SMALL[method]})
    features = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    mean, std = torch.as_tensor(features.mean(0)), torch.as_tensor(features.std(0))
    network.load_state_dict({k: v.float() for k, v in half_precision_weights(network).items()})
    original = LocationSampler(method, network, mean, std, "test-backbone", 1.5)
    sha = save_sampler(tmp_path / "s.pt", original)
    loaded = load_sampler(tmp_path / "s.pt")
    assert loaded.method == method and loaded.backbone == "test-backbone" and loaded.default_guidance == 1.5
    assert loaded.version == sha[:12] and loaded.in_dim == 6
    for name, value in loaded.network.state_dict().items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, original.network.state_dict()[name]), name
    a, b = (s.sample_places(features, 8, 4, 1.5, torch.Generator().manual_seed(3)) for s in (original, loaded))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 8, 3) and np.allclose(np.linalg.norm(a, axis=-1), 1)


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown sampler method 'vae'"):
        build_network("vae", {"embedding_dim": 4})

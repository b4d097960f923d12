"""A trained sampler of either method, with the feature standardisation it was trained with.

Checkpoints are plain `torch.save` dicts: the method, its network's config and weights (in half
precision, for size; the network runs in float32), the
train split's per-dimension feature mean and spread, the backbone the features come from, and
the guidance chosen on val, written and read by geoloc.artifacts.checkpoints (atomically; read
once, the version a prefix of the sha256 of the bytes loaded). `load_sampler` refuses a file it
cannot serve, naming why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from geoloc.artifacts.checkpoints import float_weights, load_checkpoint, save_checkpoint, standardised_network
from geoloc.common.paths import MODELS_DIR
from geoloc.geo.sphere import latlon_to_unit
from geoloc.sampler import flow, sh_diffusion
from geoloc.sampler.spherical_harmonics import SphericalGrid

METHODS = ("flow", "sh")
SHIPPED_SAMPLERS = MODELS_DIR / "sampler"


def build_network(method: str, config: dict) -> torch.nn.Module:
    if method == "flow":
        return flow.VelocityNetwork(flow.FlowConfig(**config))
    if method == "sh":
        return sh_diffusion.CoefficientDenoiser(sh_diffusion.SHDiffusionConfig(**config))
    raise ValueError(f"unknown sampler method {method!r}; expected one of {METHODS}")


@dataclass
class LocationSampler:
    method: str
    network: torch.nn.Module
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    backbone: str
    default_guidance: float
    version: str = ""
    grid: SphericalGrid | None = field(default=None, repr=False)

    def __post_init__(self):
        self.network.eval()
        if self.method == "sh" and self.grid is None:
            self.grid = SphericalGrid(self.network.config.degree)

    @property
    def in_dim(self) -> int:
        return self.network.config.embedding_dim

    @property
    def device(self) -> torch.device:
        return self.feature_mean.device

    def to(self, device: str | torch.device) -> LocationSampler:
        self.network.to(device)
        self.feature_mean, self.feature_std = self.feature_mean.to(device), self.feature_std.to(device)
        return self

    def conditions(self, features: np.ndarray) -> torch.Tensor:
        """Backbone features [q, d] as the network's standardised conditions."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
        return (x - self.feature_mean) / self.feature_std

    def start_noise(self, n_samples: int, generator: torch.Generator) -> torch.Tensor:
        """One photo's starting noise, as its sampler draws it from `generator` (on the CPU)."""
        if self.method == "flow":
            return flow.uniform_on_sphere(n_samples, generator)
        return sh_diffusion.start_noise(self.network, n_samples, generator)

    @torch.no_grad()
    def sample_places(
        self,
        features: np.ndarray,
        n_samples: int,
        steps: int,
        guidance: float,
        generator: torch.Generator | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> np.ndarray:
        """n_samples unit vectors per photo [q, n_samples, 3] for features [q, d], all photos in one batch.

        The starting noise is drawn from `generator` for the whole batch, or from `generators`, one
        per photo: then each photo's samples are those it would get alone with its generator."""
        conditions = self.conditions(features)  # one row a photo: the network computes each once a step
        total = len(conditions) * n_samples
        start = None
        if generators is not None:
            if len(generators) != len(features):
                raise ValueError(f"{len(generators)} generators for {len(features)} photos")
            start = torch.cat([self.start_noise(n_samples, g) for g in generators])
        if self.method == "flow":
            xyz = flow.sample(self.network, conditions, total, steps, guidance, generator, start)
            xyz = xyz.cpu().double().numpy()
        else:
            latlon = sh_diffusion.sample(self.network, self.grid, conditions, total, steps, guidance, generator, start)
            xyz = latlon_to_unit(latlon[:, 0], latlon[:, 1])
        return xyz.reshape(len(features), n_samples, 3)


def save_sampler(path: Path, sampler: LocationSampler) -> str:
    """Writes the checkpoint (atomically); returns its sha256."""
    record = {
        "method": sampler.method,
        **standardised_network(sampler.network, sampler.feature_mean, sampler.feature_std, sampler.backbone),
        "default_guidance": sampler.default_guidance,
    }
    return save_checkpoint(path, record)


def load_sampler(path: Path, device: str = "cpu") -> LocationSampler:
    checkpoint = load_checkpoint(path)
    saved = checkpoint.record
    network = build_network(saved["method"], saved["config"])
    network.load_state_dict(float_weights(saved["state_dict"]))
    sampler = LocationSampler(
        saved["method"],
        network,
        saved["feature_mean"],
        saved["feature_std"],
        saved["backbone"],
        float(saved["default_guidance"]),
        version=checkpoint.version,
    )
    return sampler.to(device)

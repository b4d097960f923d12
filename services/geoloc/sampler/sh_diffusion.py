"""LocDiffusion's method: denoising diffusion over spherical-harmonics coefficients.

A place is the vector of its real harmonics to degree L (the Dirac delta of
`spherical_harmonics.encode`), scaled by √(4π) so that each coefficient has mean square 1
over the sphere. A conditional denoiser learns to recover that vector from a noised copy,
z_t = √ᾱ(t) c + √(1 − ᾱ(t)) ε with a cosine schedule in continuous time; it predicts the clean
vector, so that at full noise its answer is E[c | image], the harmonic expansion of the
conditional density itself. Sampling runs deterministic DDIM steps from pure noise, with
classifier-free guidance on the predicted clean vector, and each final vector is decoded to a
place by the learning-free grid argmax and refinement of `SphericalGrid.decode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from geoloc.sampler.flow import AdaLNBlock, condition_input, condition_network, shared_conditions, time_frequencies
from geoloc.sampler.spherical_harmonics import SphericalGrid, coefficient_count, encode

COSINE_OFFSET = 0.008  # Nichol & Dhariwal's s: keeps ᾱ from being exactly 1 at t = 0
SCALE = math.sqrt(4 * math.pi)


@dataclass(frozen=True)
class SHDiffusionConfig:
    embedding_dim: int
    degree: int = 16
    width: int = 512
    depth: int = 4
    time_frequencies: int = 16


def signal_level(t: torch.Tensor) -> torch.Tensor:
    """ᾱ(t) of the cosine schedule, from about 1 at t = 0 (clean) to 0 at t = 1 (noise)."""
    angle = (t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2
    return torch.cos(angle).pow(2).clamp(0.0, 1.0)


def place_coefficients(lat_deg: np.ndarray, lon_deg: np.ndarray, degree: int) -> torch.Tensor:
    """The scaled Dirac-delta coefficients of places: float32 [n, (L+1)²], the diffusion's data."""
    return torch.from_numpy(SCALE * encode(lat_deg, lon_deg, degree)).float()


class CoefficientDenoiser(nn.Module):
    """ĉ(z_t, t, e): the clean coefficients [n, C] from noised ones, time [n] and embedding [n, d];
    or time [q] and embedding [q, d] shared by q groups of n / q consecutive rows."""

    def __init__(self, config: SHDiffusionConfig):
        super().__init__()
        self.config = config
        self.register_buffer("frequencies", time_frequencies(config.time_frequencies))
        self.embed_condition = condition_network(config.embedding_dim, config.time_frequencies, config.width)
        count = coefficient_count(config.degree)
        self.embed_coefficients = nn.Linear(count, config.width)
        self.blocks = nn.ModuleList(AdaLNBlock(config.width, config.width) for _ in range(config.depth))
        self.out = nn.Linear(config.width, count)

    def forward(self, z: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        condition = self.embed_condition(condition_input(t, embedding, self.frequencies))
        h = self.embed_coefficients(z)
        for block in self.blocks:
            h = block(h, condition)
        return self.out(h)


def denoising_loss(
    network: CoefficientDenoiser, clean: torch.Tensor, embedding: torch.Tensor, drop_condition: float = 0.1
) -> torch.Tensor:
    """Mean squared error of the predicted clean coefficients at random noise levels."""
    n, device = len(clean), clean.device
    t = torch.rand(n, device=device)
    alpha = signal_level(t)[:, None]
    z = alpha.sqrt() * clean + (1 - alpha).sqrt() * torch.randn_like(clean)
    keep = (torch.rand(n, 1, device=device) >= drop_condition).float()
    return ((network(z, t, embedding * keep) - clean) ** 2).mean()


def start_noise(network: CoefficientDenoiser, n_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """The DDIM chain's starting noise [n, C], drawn on the CPU."""
    return torch.randn(n_samples, coefficient_count(network.config.degree), generator=generator)


@torch.no_grad()
def sample_coefficients(
    network: CoefficientDenoiser,
    embedding: torch.Tensor,
    n_samples: int,
    steps: int,
    guidance: float = 0.0,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """n_samples coefficient vectors [n, C] for one embedding [d] (or q photos' [q, d], n / q each), by
    `steps` DDIM steps (η = 0).

    The noise is drawn on the CPU, so a seed gives the same start on any device; or it is given as
    `start` [n, C] (start_noise: each photo's from its own seed, when photos share a batch).
    """
    z = (start_noise(network, n_samples, generator) if start is None else start).to(embedding.device)
    condition = shared_conditions(embedding, n_samples)
    empty = torch.zeros_like(condition)
    times = torch.linspace(1.0, 0.0, steps + 1)
    for t_now, t_next in zip(times[:-1], times[1:], strict=True):
        t = torch.full((len(condition),), float(t_now), device=z.device)
        clean = network(z, t, condition)
        if guidance:
            clean = (1 + guidance) * clean - guidance * network(z, t, empty)
        alpha_now, alpha_next = signal_level(t_now), signal_level(t_next)
        noise = (z - alpha_now.sqrt() * clean) / (1 - alpha_now).sqrt().clamp_min(1e-6)
        z = alpha_next.sqrt() * clean + (1 - alpha_next).sqrt() * noise
    return z


def sample(
    network: CoefficientDenoiser,
    grid: SphericalGrid,
    embedding: torch.Tensor,
    n_samples: int,
    steps: int,
    guidance: float = 0.0,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> np.ndarray:
    """n_samples places for one embedding, as (lat, lon) degrees [n, 2]: sampled vectors, decoded."""
    coefficients = sample_coefficients(network, embedding, n_samples, steps, guidance, generator, start)
    lat, lon = grid.decode(coefficients.double().cpu().numpy())
    return np.stack([lat, lon], axis=1)

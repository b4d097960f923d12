"""Riemannian flow matching on the sphere (PLONK, "Around the World in 80 Timesteps").

Training pairs x0 ~ uniform on S² with x1, the true place; at t ~ U(0, 1) the point x_t lies
on the geodesic from x0 to x1 at fraction κ(t), a sigmoid schedule, and the network regresses
that geodesic's velocity dx_t/dt. One embedding in ten is replaced by zeros, so the same
network also learns the unconditional field, and classifier-free guidance can mix them:
v = (1 + ω) v(x, t, e) − ω v(x, t, 0). Sampling integrates with Euler steps, re-projecting
onto the sphere after each step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

SCHEDULE_LOW, SCHEDULE_HIGH = -7.0, 3.0  # κ(t) = (σ(3) − σ(−7 + 10 t)) / (σ(3) − σ(−7)), reversed below


def schedule(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fraction of the way from noise to data at time t, and its derivative.

    docs/design.md §3.2's κ(t) = (σ(3) − σ(−7 + 10t)) / (σ(3) − σ(−7)) runs from 1 at t=0 to 0 at t=1,
    with t as noise level; here time runs from noise (0) to data (1), so the fraction is 1 − κ.
    """
    low, high = torch.sigmoid(torch.tensor(SCHEDULE_LOW)), torch.sigmoid(torch.tensor(SCHEDULE_HIGH))
    s = torch.sigmoid(SCHEDULE_LOW + (SCHEDULE_HIGH - SCHEDULE_LOW) * t)
    fraction = (s - low) / (high - low)
    derivative = (SCHEDULE_HIGH - SCHEDULE_LOW) * s * (1 - s) / (high - low)
    return fraction, derivative


def geodesic_point_and_velocity(
    x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t on the arc x0 -> x1 at the schedule's fraction, and dx_t/dt: [n, 3] each."""
    cos_angle = (x0 * x1).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    angle = torch.acos(cos_angle)
    toward = x1 - cos_angle * x0
    toward = toward / toward.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    fraction, speed = (v[:, None] for v in schedule(t))
    point = torch.cos(fraction * angle) * x0 + torch.sin(fraction * angle) * toward
    velocity = speed * angle * (-torch.sin(fraction * angle) * x0 + torch.cos(fraction * angle) * toward)
    return point, velocity


def tangent(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """v projected onto the tangent plane of the sphere at x."""
    return v - (v * x).sum(-1, keepdim=True) * x


class AdaLNBlock(nn.Module):
    """A residual MLP block whose LayerNorm scale, shift and output gate come from the condition."""

    def __init__(self, width: int, condition_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(condition_dim, 3 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, h: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """h [n, width]; condition [n, c], or [q, c] for q groups of n / q consecutive rows that share it
        (a photo's samples), computed once a group rather than once a row."""
        scale, shift, gate = self.modulation(condition).chunk(3, dim=-1)
        if len(condition) != len(h):
            scale, shift, gate = (m.repeat_interleave(len(h) // len(condition), dim=0) for m in (scale, shift, gate))
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


def time_frequencies(count: int) -> torch.Tensor:
    """Angular frequencies 2^k·π, k < count, of the sinusoidal time features."""
    return 2 ** torch.arange(count, dtype=torch.float32) * math.pi


def condition_network(embedding_dim: int, time_frequency_count: int, width: int) -> nn.Sequential:
    """The MLP from [embedding, sin and cos of time phases] to the AdaLN blocks' condition."""
    return nn.Sequential(
        nn.Linear(embedding_dim + 2 * time_frequency_count, width),
        nn.SiLU(),
        nn.Linear(width, width),
        nn.SiLU(),
    )


def condition_input(t: torch.Tensor, embedding: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    phases = t[:, None] * frequencies
    return torch.cat([embedding, torch.sin(phases), torch.cos(phases)], dim=-1)


@dataclass(frozen=True)
class FlowConfig:
    embedding_dim: int
    width: int = 256
    depth: int = 6
    time_frequencies: int = 16


class VelocityNetwork(nn.Module):
    """v(x, t, e): a tangent velocity at the point x [n, 3], time t [n], embedding e [n, d]; or time
    [q] and embedding [q, d] shared by q groups of n / q consecutive points."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        condition_dim = config.width
        self.register_buffer("frequencies", time_frequencies(config.time_frequencies))
        self.embed_condition = condition_network(config.embedding_dim, config.time_frequencies, condition_dim)
        self.embed_point = nn.Linear(3, config.width)
        self.blocks = nn.ModuleList(AdaLNBlock(config.width, condition_dim) for _ in range(config.depth))
        self.out = nn.Linear(config.width, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        condition = self.embed_condition(condition_input(t, embedding, self.frequencies))
        h = self.embed_point(x)
        for block in self.blocks:
            h = block(h, condition)
        return tangent(self.out(h), x)


def uniform_on_sphere(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    x = torch.randn(n, 3, generator=generator)
    return x / x.norm(dim=-1, keepdim=True)


def flow_matching_loss(
    network: VelocityNetwork, x1: torch.Tensor, embedding: torch.Tensor, drop_condition: float = 0.1
) -> torch.Tensor:
    """Mean squared error between the network's velocity and the geodesic's, at random times."""
    n, device = len(x1), x1.device
    x0, t = uniform_on_sphere(n).to(device), torch.rand(n, device=device)
    point, velocity = geodesic_point_and_velocity(x0, x1, t)
    keep = (torch.rand(n, 1, device=device) >= drop_condition).float()
    return ((network(point, t, embedding * keep) - velocity) ** 2).sum(-1).mean()


def shared_conditions(embedding: torch.Tensor, n_samples: int) -> torch.Tensor:
    """One photo's embedding [d] or q photos' [q, d] as the rows [q, d] that the network computes its
    condition from once a photo, for n_samples samples in all (n_samples / q a photo)."""
    rows = embedding.reshape(-1, embedding.shape[-1])
    if n_samples % len(rows):
        raise ValueError(f"{n_samples} samples do not split evenly over {len(rows)} photos")
    return rows


@torch.no_grad()
def trajectory(
    network: VelocityNetwork,
    embedding: torch.Tensor,
    n_samples: int,
    steps: int,
    guidance: float = 0.0,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """The points [n, 3] after each of `steps` Euler steps from uniform noise, for one embedding [d].

    Every step is re-projected onto the sphere, so every point yielded is a unit vector. The
    embedding may also be [q, d] for q photos, n_samples / q each, their samples in order, to
    sample for many photos at once.
    The noise is drawn on the CPU, so a seed gives the same start on any device; or it is given
    as `start` [n, 3] (each photo's drawn from its own seed, when photos share a batch).
    """
    x = (uniform_on_sphere(n_samples, generator) if start is None else start).to(embedding.device)
    condition = shared_conditions(embedding, n_samples)
    empty = torch.zeros_like(condition)
    for step in range(steps):
        t = torch.full((len(condition),), step / steps, device=x.device)
        v = network(x, t, condition)
        if guidance:
            v = (1 + guidance) * v - guidance * network(x, t, empty)
        x = x + v / steps
        x = x / x.norm(dim=-1, keepdim=True)
        yield x


def sample(
    network: VelocityNetwork,
    embedding: torch.Tensor,
    n_samples: int,
    steps: int,
    guidance: float = 0.0,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """n_samples points [n, 3] on the sphere for one embedding [d]: the trajectory's end."""
    return deque(trajectory(network, embedding, n_samples, steps, guidance, generator, start), maxlen=1)[0]

"""GeoCLIP's location encoder: (lat, lon) in degrees -> a 512-d feature, with its released weights.

The method (Vivanco Cepeda et al., GeoCLIP, NeurIPS 2023): project the point with the Equal
Earth projection, scaled so that the map spans about [-1, 1]; encode it with random Fourier
features at three scales (sigma = 2^0, 2^4, 2^8), each through its own MLP
512 -> 1024 -> 1024 -> 1024 -> 512; sum the three. The Fourier frequency matrices are part of
the checkpoint and are loaded, never re-sampled.

The weights are those the PyPI package ``geoclip`` ships (MIT). The package itself is never
imported (its ``__init__`` pulls in transformers and a CLIP download): its files are found
with ``importlib.util.find_spec``. Parameter names match the package's, so its state dict
loads strictly.
"""

from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

# Equal Earth projection (Šavrič, Patterson and Jenny, 2018).
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
# GeoCLIP's scale: map units to roughly [-1, 1] once divided by 180.
EQUAL_EARTH_SCALE = 66.50336
SIGMAS = (2.0**0, 2.0**4, 2.0**8)
FOURIER_FEATURES = 256
FEATURE_DIM = 512


def geoclip_package_dir() -> Path:
    """The installed geoclip package's `model/` folder (weights and the 100K gallery), unimported."""
    spec = find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the geoclip package is not installed (pip install --no-deps geoclip==1.3.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def geoclip_weights_path(name: str) -> Path:
    """`location_encoder_weights.pth`, `image_encoder_mlp_weights.pth` or `logit_scale_weights.pth`."""
    return geoclip_package_dir() / "weights" / name


def equal_earth(lat_lon_deg: torch.Tensor) -> torch.Tensor:
    """[n, 2] (lat, lon) in degrees -> [n, 2] (x, y) Equal Earth coordinates in GeoCLIP's scale.

    Written term by term as the projection is defined, in float32 throughout: the sigma = 256
    Fourier branch turns a 1e-7 difference here into 1e-5 in the feature.
    """
    lat = torch.deg2rad(lat_lon_deg[:, 0])
    lon = torch.deg2rad(lat_lon_deg[:, 1])
    root3 = torch.sqrt(torch.tensor(3.0, dtype=lat.dtype, device=lat.device))
    theta = torch.asin(root3 / 2 * torch.sin(lat))
    x = 2 * root3 * lon * torch.cos(theta) / (3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1))
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return torch.stack((x, y), dim=1) * EQUAL_EARTH_SCALE / 180


class FourierFeatures(nn.Module):
    """[cos 2πBv, sin 2πBv] for a fixed Gaussian frequency matrix B [features, 2]."""

    def __init__(self, sigma: float, features: int = FOURIER_FEATURES):
        super().__init__()
        self.register_buffer("b", torch.randn(features, 2) * sigma)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * v @ self.b.T
        return torch.cat((torch.cos(phase), torch.sin(phase)), dim=-1)


class ScaleBranch(nn.Module):
    """One scale of the encoder: Fourier features, three ReLU layers of 1024, a linear head to 512."""

    def __init__(self, sigma: float):
        super().__init__()
        width = 1024
        self.capsule = nn.Sequential(
            FourierFeatures(sigma),
            nn.Linear(2 * FOURIER_FEATURES, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(width, FEATURE_DIM))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(xy))


class LocationEncoder(nn.Module):
    """[n, 2] (lat, lon) degrees -> [n, 512] location features (not normalised)."""

    def __init__(self, sigmas: tuple[float, ...] = SIGMAS):
        super().__init__()
        for i, sigma in enumerate(sigmas):
            self.add_module(f"LocEnc{i}", ScaleBranch(sigma))
        self.branches = len(sigmas)

    @classmethod
    def pretrained(cls, weights: Path | None = None) -> LocationEncoder:
        """The encoder with GeoCLIP's released weights (the geoclip package's file by default)."""
        path = weights or geoclip_weights_path("location_encoder_weights.pth")
        encoder = cls()
        encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return encoder.eval().requires_grad_(False)

    def forward(self, lat_lon_deg: torch.Tensor) -> torch.Tensor:
        xy = equal_earth(lat_lon_deg)
        return sum(getattr(self, f"LocEnc{i}")(xy) for i in range(self.branches))

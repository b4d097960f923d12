"""Image heads: a backbone feature -> GeoCLIP's 512-d space, with the logit scale of its softmax.

- For CLIP ViT-L/14 features (768-d): GeoCLIP's released image MLP (768 -> 768 -> 512) and
  logit scale (exp 3.681 = 39.69), from the geoclip package's files.
- For the default EfficientNet-Lite2 feature (1280-d): a head of the same shape that
  `geoloc train gallery` trains against the frozen location encoder, shipped in
  models/gallery/ with its manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoloc.artifacts.checkpoints import BUFFER_ARCHIVE, load_checkpoint, save_checkpoint
from geoloc.common.paths import MODELS_DIR
from geoloc.gallery.location_encoder import FEATURE_DIM, geoclip_weights_path

CLIP_BACKBONE = "clip-vit-l14"
SHIPPED_HEADS = MODELS_DIR / "gallery"
SHIPPED_HEAD = SHIPPED_HEADS / "efficientnet_lite2_head.pt"  # the default backbone's


class ImageMLP(nn.Module):
    """Standardise, then Linear(in, hidden) -> ReLU -> Linear(hidden, 512); dropout on the input.

    The layer names match GeoCLIP's image MLP (`mlp.0`, `mlp.2`) so its weights load strictly.
    The standardisation (per-feature shift and scale, fixed from the training features) is the
    identity for GeoCLIP's head, which takes raw CLIP features.
    """

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, FEATURE_DIM))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.dropout((features - self.shift) * self.scale))


@dataclass
class GalleryHead:
    """A trained head, ready to turn backbone features into unit query vectors."""

    mlp: ImageMLP
    logit_scale: float  # the multiplier itself, not its log
    backbone: str
    version: str

    @property
    def in_dim(self) -> int:
        return self.mlp.mlp[0].in_features

    @torch.inference_mode()
    def queries(self, features: np.ndarray) -> np.ndarray:
        """Unit vectors [q, 512] float32 for backbone features [q, in_dim]."""
        out = self.mlp(torch.as_tensor(features, dtype=torch.float32))
        return nn.functional.normalize(out, dim=1).numpy()


def clip_head() -> GalleryHead:
    """GeoCLIP's released head for CLIP ViT-L/14 projected features."""
    mlp = ImageMLP(768, 768)
    weights = load_checkpoint(geoclip_weights_path("image_encoder_mlp_weights.pth"))
    mlp.mlp.load_state_dict(weights.record, strict=True)
    log_scale = load_checkpoint(geoclip_weights_path("logit_scale_weights.pth")).record
    return GalleryHead(mlp.eval(), math.exp(float(log_scale)), CLIP_BACKBONE, "geoclip-" + weights.version)


def save_head(path: Path, mlp: ImageMLP, logit_scale: float, backbone: str) -> str:
    """Writes a trained head checkpoint (atomically); returns its sha256.

    Heads have always been saved through a stream, so their zip's folder is `archive/` whatever
    the file's name: kept, so that a head saved again is byte for byte the one shipped."""
    record = {
        "state_dict": mlp.state_dict(),
        "in_dim": mlp.mlp[0].in_features,
        "hidden_dim": mlp.mlp[0].out_features,
        "logit_scale": float(logit_scale),
        "backbone": backbone,
    }
    return save_checkpoint(path, record, archive=BUFFER_ARCHIVE)


def load_head(path: Path) -> GalleryHead:
    """A head saved by `save_head` (or "clip" for GeoCLIP's released one); its version is the file's sha256[:12]."""
    if str(path) == "clip":
        return clip_head()
    checkpoint = load_checkpoint(path)
    saved = checkpoint.record
    mlp = ImageMLP(saved["in_dim"], saved["hidden_dim"])
    mlp.load_state_dict(saved["state_dict"], strict=True)
    return GalleryHead(mlp.eval(), float(saved["logit_scale"]), saved["backbone"], checkpoint.version)

"""A trained token decoder with the feature standardisation it was trained with, saved and loaded.

Checkpoints are plain `torch.save` dicts: the decoder's config and weights (learnt weights in half
precision, for size; the network runs in float32), the train split's per-dimension feature mean
and spread, and the backbone the features come from, written and read by
geoloc.artifacts.checkpoints (atomically; read once). The version is a prefix of the file's sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geoloc.artifacts.checkpoints import float_weights, load_checkpoint, save_checkpoint, standardised_network
from geoloc.common.paths import MODELS_DIR
from geoloc.tokens.decoder import TokenDecoder, TokenDecoderConfig

SHIPPED_TOKENS = MODELS_DIR / "tokens"


@dataclass
class Standardiser:
    """Backbone features to the decoder's conditions: per-dimension (x − mean) / std of the train split."""

    mean: torch.Tensor
    std: torch.Tensor

    def to(self, device: str | torch.device) -> Standardiser:
        return Standardiser(self.mean.to(device), self.std.to(device))

    def __call__(self, features: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.mean.device)
        return (x - self.mean) / self.std


@dataclass
class TokenModel:
    decoder: TokenDecoder
    standardiser: Standardiser
    backbone: str
    version: str = ""

    def __post_init__(self):
        self.decoder.eval()

    @property
    def in_dim(self) -> int:
        return self.decoder.config.embedding_dim

    @property
    def neighbour_slots(self) -> int:
        """How many retrieved places the decoder attends to; 0 when it takes the image alone."""
        return self.decoder.config.neighbours

    @property
    def device(self) -> torch.device:
        return self.standardiser.mean.device

    def to(self, device: str | torch.device) -> TokenModel:
        self.decoder.to(device)
        self.standardiser = self.standardiser.to(device)
        return self


def save_token_model(path: Path, model: TokenModel) -> str:
    """Writes the checkpoint (atomically); returns its sha256."""
    mean, std = model.standardiser.mean, model.standardiser.std
    return save_checkpoint(path, standardised_network(model.decoder, mean, std, model.backbone))


def load_token_model(path: Path, device: str = "cpu") -> TokenModel:
    checkpoint = load_checkpoint(path)
    saved = checkpoint.record
    decoder = TokenDecoder(TokenDecoderConfig(**saved["config"]))
    decoder.load_state_dict(float_weights(saved["state_dict"]))
    model = TokenModel(
        decoder,
        Standardiser(saved["feature_mean"], saved["feature_std"]),
        saved["backbone"],
        version=checkpoint.version,
    )
    return model.to(device)

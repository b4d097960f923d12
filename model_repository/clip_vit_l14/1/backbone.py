"""CLIP ViT-L/14's projected image feature, in plain torch, from a local Hugging Face directory.

GeoCLIP's released image head takes this 768-d feature: the vision tower's pooled output
through CLIP's visual projection (``image_embeds``), not L2-normalised. The weights are never
fetched from a hub: the directory (``config.json`` + ``model.safetensors``, as saved by
``save_pretrained`` of CLIPModel or CLIPVisionModelWithProjection) must be on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn


class ClipImageFeatures(nn.Module):
    """uint8 RGB crops [batch, S, S, 3] -> float32 projected features [batch, projection_dim]."""

    def __init__(self, weights_dir: str, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import CLIPVisionModelWithProjection

        if not os.path.isfile(os.path.join(weights_dir, "config.json")):
            raise FileNotFoundError(f"no Hugging Face CLIP checkpoint in {weights_dir} (config.json missing)")
        self.network = CLIPVisionModelWithProjection.from_pretrained(weights_dir, local_files_only=True).eval()
        self.image_size = int(self.network.config.image_size)
        self.feature_dim = int(self.network.config.projection_dim)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).float()
        return self.network(pixel_values=(pixels - self.mean) / self.std).image_embeds


def network_from_parameters(parameters: dict[str, str], model_dir: str) -> ClipImageFeatures:
    """The network as config.pbtxt's parameters (plain strings) describe it; `weights_dir` is
    relative to the model's folder `model_dir` unless absolute."""
    return ClipImageFeatures(
        os.path.join(model_dir, parameters["weights_dir"]),
        [float(v) for v in parameters["preprocess_mean"].split(",")],
        [float(v) for v in parameters["preprocess_std"].split(",")],
    )

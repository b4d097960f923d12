"""CLIP ViT-L/14's projected text feature, in plain torch, from a local Hugging Face directory.

The text tower's pooled output through CLIP's text projection (``text_embeds``), not
L2-normalised: the same space as the image tower's ``image_embeds``, which is why GeoCLIP's image
head can take it. The directory is the one the image tower reads (a CLIPModel saved with
``save_pretrained``), with its tokenizer; nothing is fetched from a hub.
"""

from __future__ import annotations

import os

import torch
from torch import nn


class ClipTextFeatures(nn.Module):
    """Texts -> (float32 projected features [batch, projection_dim], bool [batch]: cut to the context)."""

    def __init__(self, weights_dir: str):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, CLIPTextModelWithProjection, CLIPTokenizer

        if not os.path.isfile(os.path.join(weights_dir, "config.json")):
            raise FileNotFoundError(f"no Hugging Face CLIP checkpoint in {weights_dir} (config.json missing)")
        config = AutoConfig.from_pretrained(weights_dir, local_files_only=True)
        text_config = getattr(config, "text_config", config)
        # A whole CLIPModel checkpoint keeps the projection width at its top level; the text
        # config's own default (512) would drop ViT-L/14's 768-d projection on loading.
        text_config.projection_dim = getattr(config, "projection_dim", text_config.projection_dim)
        self.network = CLIPTextModelWithProjection.from_pretrained(
            weights_dir, config=text_config, local_files_only=True
        ).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(weights_dir, local_files_only=True)
        self.context_length = int(text_config.max_position_embeddings)
        self.feature_dim = int(text_config.projection_dim)

    @torch.inference_mode()
    def forward(self, texts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        whole = self.tokenizer(texts).input_ids
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        ).to(device)
        truncated = torch.tensor([len(ids) > self.context_length for ids in whole])
        return self.network(**tokens).text_embeds, truncated


def network_from_parameters(parameters: dict[str, str], model_dir: str) -> ClipTextFeatures:
    """The network as config.pbtxt's parameters describe it; `weights_dir` is relative to the model's
    folder `model_dir` unless absolute."""
    return ClipTextFeatures(os.path.join(model_dir, parameters["weights_dir"]))

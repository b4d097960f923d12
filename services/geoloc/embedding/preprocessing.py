"""The geometry half of a backbone's preprocessing: photo -> the fixed-size uint8 crop it takes.

Each Triton model declares its preprocessing once, in its config.pbtxt parameters, as what
the backbone was trained with; the service reads them through Triton's model-config API and
the model applies the normalisation half. Two crops exist:

- ``padded_center_crop`` (TF EfficientNet evaluation): a centred square of side
  ``size / (size + padding)`` times the shorter side, resized to ``size``;
- ``resize_then_center_crop`` (CLIP): the shorter side resized to ``size``, then the centred
  ``size`` square.

Resampling is Pillow's, which low-pass filters when shrinking; TensorFlow's bicubic resize
did not, so features differ slightly from the TF originals on large photos (docs/triton.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from geoloc.common.photos import PhotoLimits, decode_photo
from geoloc.embedding.model_config import model_parameters

RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
CROPS = ("padded_center_crop", "resize_then_center_crop")


@dataclass(frozen=True)
class CropSpec:
    """Where a backbone's input crop comes from, and its side in pixels."""

    size: int
    crop: str
    padding: int
    resample: str

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"unknown preprocess_crop {self.crop!r}; known: {', '.join(CROPS)}")
        if self.resample not in RESAMPLING:
            raise ValueError(f"unknown preprocess_resample {self.resample!r}; known: {', '.join(RESAMPLING)}")
        if self.size <= 0 or self.padding < 0:
            raise ValueError(f"crop size must be positive and padding non-negative, got {self.size} and {self.padding}")

    @classmethod
    def from_model_config(cls, config: Mapping) -> CropSpec:
        """Reads a Triton model config (the JSON form of its config.pbtxt)."""
        parameters = model_parameters(config)
        dims = [int(d) for d in config["input"][0]["dims"]]
        if len(dims) != 3 or dims[0] != dims[1] or dims[2] != 3:
            raise ValueError(f"the model's input must be [size, size, 3] RGB, got {dims}")
        try:
            return cls(
                size=dims[0],
                crop=parameters["preprocess_crop"],
                padding=int(parameters.get("preprocess_crop_padding", "0")),
                resample=parameters.get("preprocess_resample", "bicubic"),
            )
        except KeyError as missing:
            raise ValueError(f"the model config lacks the parameter {missing}") from None

    @property
    def decode_side(self) -> int:
        """A side the photo may be decoded down to without losing what the crop needs."""
        return 2 * (self.size + self.padding)

    def model_input(self, image: Image.Image) -> np.ndarray:
        """The crop as uint8 [size, size, 3], from an RGB image."""
        width, height = image.size
        resample = RESAMPLING[self.resample]
        if self.crop == "padded_center_crop":
            side = max(1, int(self.size / (self.size + self.padding) * min(width, height)))
            top, left = (height - side + 1) // 2, (width - side + 1) // 2
            cropped = image.resize((self.size, self.size), resample, box=(left, top, left + side, top + side))
        else:
            short, long = min(width, height), max(width, height)
            long_side = max(self.size, int(self.size * long / short))  # truncated, as CLIP's processor does
            new_w, new_h = (self.size, long_side) if width <= height else (long_side, self.size)
            resized = image.resize((new_w, new_h), resample)
            top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
            cropped = resized.crop((left, top, left + self.size, top + self.size))
        return np.array(cropped, dtype=np.uint8)  # a writable copy: torch and tritonclient take it as is


def model_input_from_photo(data: bytes, limits: PhotoLimits, crop: CropSpec, field: str = "image") -> np.ndarray:
    """Photo bytes -> the backbone's uint8 input crop; raises InvalidArgument for a bad photo."""
    return crop.model_input(decode_photo(data, limits, field, draft_side=crop.decode_side))


def declared_preprocessing(config: dict) -> dict:
    """The input geometry and every `preprocess_*` parameter (crop, resampling, mean, std) of a
    model config (Triton's JSON form): what two models must share for their features to agree."""
    parameters = model_parameters(config)
    return {
        "input_dims": [int(d) for d in config["input"][0]["dims"]],
        **{key: parameters[key] for key in sorted(parameters) if key.startswith("preprocess_")},
    }

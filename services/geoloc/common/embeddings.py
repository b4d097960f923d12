"""Checking an `Embedding` message before an expert head reads it."""

from __future__ import annotations

import numpy as np

from geoloc.common.errors import InvalidArgument

# A backbone feature is a pooled activation, a few units at most (EfficientNet-Lite2's lie in
# [0, 6]). Finite values near float32's limit overflow the heads into NaN answers or a failed
# decode, so anything this far past a real feature is refused (1e8 was checked to stay finite).
MAX_FEATURE_MAGNITUDE = 1e4


def validated_embedding(embedding, dim: int, backbone: str, expert: str) -> np.ndarray:
    """An `Embedding` message's values as float32 [dim]; raises InvalidArgument naming the field that is wrong.

    An embedding from another backbone, of another length, holding NaN or infinity, or values no
    backbone feature reaches would give a confident answer about nothing (or none), so it is refused.
    """
    values = np.asarray(embedding.values, dtype=np.float32)
    if len(values) != dim:
        raise InvalidArgument("embedding.values", f"has {len(values)} values; the {expert} for {backbone} takes {dim}")
    if not np.isfinite(values).all():
        raise InvalidArgument("embedding.values", f"holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    largest = float(np.abs(values).max()) if len(values) else 0.0
    if largest > MAX_FEATURE_MAGNITUDE:
        raise InvalidArgument(
            "embedding.values",
            f"holds a value of magnitude {largest:g}; the {expert} takes features within ±{MAX_FEATURE_MAGNITUDE:g}",
        )
    if embedding.backbone.name and embedding.backbone.name != backbone:
        raise InvalidArgument(
            "embedding.backbone.name", f"is {embedding.backbone.name!r}; the {expert} takes {backbone!r} features"
        )
    return values

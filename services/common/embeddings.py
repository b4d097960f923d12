"""Checking an `Embedding` message before an expert head reads it."""

from __future__ import annotations

import numpy as np

from geoloc.common.errors import InvalidArgument
from geoloc.v1 import common_pb2


def validated_embedding(embedding: common_pb2.Embedding, dim: int, backbone: str, expert: str) -> np.ndarray:
    """The embedding's values as float32 [dim]; raises InvalidArgument naming the field that is wrong.

    An embedding from another backbone, of another length, or holding NaN or infinity would give
    a confident answer about nothing, so it is refused.
    """
    values = np.asarray(embedding.values, dtype=np.float32)
    if len(values) != dim:
        raise InvalidArgument("embedding.values", f"has {len(values)} values; the {expert} for {backbone} takes {dim}")
    if not np.isfinite(values).all():
        raise InvalidArgument("embedding.values", f"holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    if embedding.backbone.name and embedding.backbone.name != backbone:
        raise InvalidArgument(
            "embedding.backbone.name", f"is {embedding.backbone.name!r}; the {expert} takes {backbone!r} features"
        )
    return values

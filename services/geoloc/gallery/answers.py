"""The gallery expert's answer as points: what its service returns and the fusion fit reads.

The service (gallery/server.py) and the fitting path (training/expert_outputs.py) both answer
through GalleryRetrieval.top_k; this turns its answer into the fusion's rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geoloc.gallery.retrieval import GalleryRetrieval


def gallery_points(retrieval: GalleryRetrieval, features: np.ndarray, asked: Mapping[str, int], seed: int = 0):
    """[n, gallery_k, 4] (lat, lon, probability, radius_km 0) for backbone features [n, d]; `seed` is unused
    (a search draws nothing) and taken so that every expert's answer function reads alike."""
    places = retrieval.top_places(features, asked["gallery_k"])
    return np.stack([places.lat_deg, places.lon_deg, places.probability, np.zeros_like(places.probability)], axis=-1)

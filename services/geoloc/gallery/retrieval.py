"""The gallery expert's answer: a backbone feature -> the k most probable places of the GPS gallery.

    retrieval = GalleryRetrieval.load()            # the shipped head on the default 100K gallery
    places = retrieval.top_places(features, k)     # lat, lon, probability [n, k], best first

GeoCLIP's probability of a gallery point is the softmax of logit_scale * cosine over the WHOLE
gallery, so the k probabilities are not renormalised over the top k: their sum says how much of
the mass the k points hold. The gallery service, the token decoder's training neighbours and the
fusion's fitting all ask through this one class, so they get the same points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoloc.gallery.build import DEFAULT_GALLERY_DIR, build_gallery, default_gallery_csv
from geoloc.gallery.heads import SHIPPED_HEAD, GalleryHead, load_head
from geoloc.gallery.index import IVF_NPROBE, MANIFEST_FILE, GalleryIndex


@dataclass(frozen=True)
class GalleryPlaces:
    """The top places of each query row: [n, k] arrays, most probable first."""

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    probability: np.ndarray


def loaded_gallery(
    folder: Path = DEFAULT_GALLERY_DIR, build_if_missing: bool = True, use_gpu: bool = False, nprobe: int = IVF_NPROBE
) -> GalleryIndex:
    """The saved gallery in `folder`; when it is not there (and build_if_missing), the default 100K
    gallery is built into it first (about a minute)."""
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).exists() and build_if_missing:
        build_gallery(default_gallery_csv(), folder, progress=False)
    return GalleryIndex.load(folder, use_gpu=use_gpu, nprobe=nprobe)


QUERY_ROWS = 8192  # features turned into queries and searched at once


class GalleryRetrieval:
    """An image head over a gallery index: GeoCLIP's image-to-GPS retrieval."""

    def __init__(self, head: GalleryHead, gallery: GalleryIndex):
        self.head = head
        self.gallery = gallery

    @classmethod
    def load(
        cls,
        head: str | Path = SHIPPED_HEAD,
        gallery_dir: Path = DEFAULT_GALLERY_DIR,
        build_if_missing: bool = True,
        use_gpu: bool = False,
        nprobe: int = IVF_NPROBE,
    ) -> GalleryRetrieval:
        """`head`: a checkpoint path, or "clip" for GeoCLIP's released head; see loaded_gallery."""
        return cls(load_head(head), loaded_gallery(gallery_dir, build_if_missing, use_gpu, nprobe))

    def __len__(self) -> int:
        return len(self.gallery)

    def top_k(self, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole-gallery softmax probabilities [n, k] of the k most probable points, and their ids [n, k].

        By QUERY_ROWS rows at a time (each row's answer is its own), so that a training set's millions
        of features, memory-mapped, never become one array of queries."""
        answers = [
            self.gallery.softmax_top_k(
                self.head.queries(np.asarray(features[start : start + QUERY_ROWS], dtype=np.float32)),
                k,
                self.head.logit_scale,
            )
            for start in range(0, max(len(features), 1), QUERY_ROWS)
        ]
        return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])

    def top_places(self, features: np.ndarray, k: int) -> GalleryPlaces:
        probabilities, ids = self.top_k(features, k)
        places = self.gallery.coordinates[ids]
        return GalleryPlaces(places[..., 0], places[..., 1], probabilities)

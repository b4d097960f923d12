"""Photographer-grouped folds for cross-validation: no photographer's photos on both sides of a split.

Im2GPS3k's bursts (one photographer has 167 train photos on Skye) make a photo-level split
optimistic: a model that memorises a burst is scored on the same burst. Folds here are drawn by
photographer: largest photographer first (ties in sha256-of-author order, so the result is fixed),
each into the fold with the fewest photos so far, so the folds differ in size by at most the
largest burst. A photo with no author is a photographer of its own.

The same bursts would decide any fit that counts photos: `photo_weights` gives each photo its
share of its photographer's vote, for the experts' training losses and the fusion's fit alike.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _author_key(author: str) -> str:
    return hashlib.sha256(author.encode()).hexdigest()


def photographer_folds(authors: Sequence[str], k: int) -> np.ndarray:
    """The fold [n] in 0..k-1 of each photo, from its author; the same authors always give the same folds."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    names = [a if a else f"\0photo {i}" for i, a in enumerate(authors)]
    counts = Counter(names)
    if len(counts) < k:
        raise ValueError(f"{len(counts)} photographers cannot fill {k} folds")
    sizes = np.zeros(k, dtype=int)
    fold_of: dict[str, int] = {}
    for author in sorted(counts, key=lambda a: (-counts[a], _author_key(a))):
        fold = int(np.argmin(sizes))
        fold_of[author] = fold
        sizes[fold] += counts[author]
    return np.array([fold_of[a] for a in names], dtype=int)


WEIGHTINGS = ("photo", "inverse", "cap10")


def photo_weights(authors: Sequence[str], scheme: str) -> np.ndarray:
    """Per photo, its weight in a training loss or a fit: "photo" 1 each; "inverse" 1 / (photos by
    its photographer), so every photographer counts once; "cap10" min(1, 10 / photos by its
    photographer). Authorless photos stand alone."""
    count = Counter(a for a in authors if a)
    by = np.array([count[a] if a else 1 for a in authors], dtype=np.float64)
    if scheme == "photo":
        return np.ones(len(by))
    if scheme == "inverse":
        return 1.0 / by
    if scheme == "cap10":
        return np.minimum(1.0, 10.0 / by)
    raise ValueError(f"unknown photo weighting {scheme!r}; choose from {WEIGHTINGS}")

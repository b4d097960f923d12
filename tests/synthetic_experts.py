"""Seeded synthetic experts and photo places for the fusion's fitting tests."""

from __future__ import annotations

import numpy as np

_RNG = np.random.default_rng(0)
# Where photos are taken: half around central Europe, half anywhere between 60° S and 70° N.
GALLERY = np.concatenate(
    [
        np.stack([_RNG.normal(48, 5, 1500), _RNG.normal(8, 8, 1500)], axis=1),
        np.stack([_RNG.uniform(-60, 70, 1500), _RNG.uniform(-180, 180, 1500)], axis=1),
    ]
)


def informative_and_misleading(n: int, seed: int = 1, photographers: int = 15):
    """(outputs, truth [n, 2], authors): true places anywhere; "gallery" answers within ~100 km of
    the truth, "tokens" a random place with the same confidence (one 50 km point each)."""
    rng = np.random.default_rng(seed)
    truth = np.stack([rng.uniform(-50, 60, n), rng.uniform(-180, 180, n)], axis=1)
    near = truth + rng.normal(0, 1.0, (n, 2))
    far = np.stack([rng.uniform(-50, 60, n), rng.uniform(-180, 180, n)], axis=1)

    def points(places):
        return np.stack([places[:, 0], places[:, 1], np.ones(n), np.full(n, 50.0)], axis=1)[:, None, :]

    authors = [f"p{i % photographers}" for i in range(n)]
    return {"gallery": points(near), "tokens": points(far)}, truth, authors


def text_like(truth: np.ndarray, every: int = 3, misread_every: int = 0, seed: int = 2) -> np.ndarray:
    """A text-like expert's points [n, 2, 4]: on every `every`-th photo a 5 km point on the true place
    (a named city), silent (no weighted point) on the rest. With `misread_every`, every such photo of
    those it answers instead names a place 20° to 40° of latitude away (Paris, Texas for Paris)."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    answered = np.flatnonzero(np.arange(n) % every == 0)
    places = truth[answered].copy()
    if misread_every:
        wrong = np.arange(len(answered)) % misread_every == misread_every - 1
        shift = rng.uniform(20, 40, wrong.sum()) * np.where(places[wrong, 0] > 0, -1, 1)
        places[wrong, 0] += shift
    text = np.zeros((n, 2, 4))
    text[answered, 0] = np.stack([places[:, 0], places[:, 1], np.ones(len(places)), np.full(len(places), 5.0)], axis=1)
    return text

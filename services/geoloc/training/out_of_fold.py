"""Out-of-fold expert answers: every photo answered by experts trained without its fold.

Cross-validating the fusion by photographer needs, for each photo, what the trained experts answer
when neither that photo nor any photo of its fold was among their training or stopping data. For
each fold f the experts are trained here on the other folds' photos, in the shipped
configurations (each shipped manifest's `chosen`) at a smaller budget (FoldBudget), each stopping
on an inner photographer-grouped hold-out of those same photos; then fold f's photos are answered
through `expert_answers`, the code the shipped models answer through. Each expert's answers to
each fold are cached apart, keyed by what that expert depends on: comparing another configuration
of one expert (`configs`, as `geoloc cv --expert-config` gives) retrains that expert alone.

    folds = photographer_folds(authors, 5)
    outputs = out_of_fold_outputs(features, coords, authors, folds, FoldBudget(), ExpertRequests(), cache_dir())
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from geoloc import experts as registry
from geoloc.artifacts.files import written_atomically
from geoloc.evaluation.folds import photo_weights, photographer_folds
from geoloc.experts import TRAINED_EXPERTS
from geoloc.gallery.index import GalleryIndex
from geoloc.gallery.location_encoder import LocationEncoder
from geoloc.gallery.retrieval import loaded_gallery
from geoloc.training.expert_outputs import (
    ANSWER_RULE,
    ExpertModels,
    ExpertRequests,
    expert_answers,
    shipped_checkpoints,
)
from geoloc.training.fold_budget import SET_BY_BUDGET, FoldBudget, FoldPhotos

BACKBONE = "efficientnet-lite2"
VERSION = "out-of-fold"
INNER_FOLDS = 5  # the inner hold-out is one fifth of the training photographers, as val is of Im2GPS3k's
# Each shipped expert's manifest, beside its checkpoint: its `chosen` is the configuration folds train in.
SHIPPED_MANIFESTS = {expert: path.with_suffix(".json") for expert, path in shipped_checkpoints().items()}


def _shipped_choice(expert: str) -> dict:
    return json.loads(SHIPPED_MANIFESTS[expert].read_text())["chosen"]


def fold_configs(budget: FoldBudget, configs: Mapping[str, Mapping] | None = None) -> dict[str, Any]:
    """{expert: its training configuration}: the shipped configurations (each trainer's
    shipped_config at the budget's epochs, steps and evaluations), then `configs`: per expert,
    fields of its training configuration to use instead (a dict-valued field such as `network` is
    merged key by key), as a configuration compared under cross-validation. Raises ValueError for
    an unknown expert or field, and for a configuration its trainer's `check` refuses (a token
    decoder that attends to gallery neighbours: expert_answers asks the token expert without them).
    """
    unknown = sorted(set(configs or {}) - set(TRAINED_EXPERTS))
    if unknown:
        raise ValueError(f"no expert named {', '.join(unknown)}; the experts are {', '.join(TRAINED_EXPERTS)}")
    chosen = {}
    for expert in TRAINED_EXPERTS:
        trainer = registry.expert(expert).trainer()
        config = trainer.shipped_config(_shipped_choice(expert), budget)
        if expert in (configs or {}):
            config = with_fields(config, configs[expert], expert)
        trainer.check(config)
        chosen[expert] = config
    return chosen


def with_fields(config, changes: Mapping, expert: str = "the expert"):
    """`config` (a training configuration dataclass) with `changes`; dict-valued fields merged."""
    names = {f.name for f in fields(config)} - set(SET_BY_BUDGET)
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(
            f"{expert}'s training configuration has no field {', '.join(unknown)} to change; "
            f"it has {', '.join(sorted(names))} (the fold budget sets {', '.join(SET_BY_BUDGET)})"
        )
    merged = {
        k: {**getattr(config, k), **v} if isinstance(getattr(config, k), dict) and isinstance(v, Mapping) else v
        for k, v in changes.items()
    }
    return replace(config, **merged)


def _quiet(line: str) -> None:
    """Drops the training loops' per-step lines: four runs' worth per fold would bury the summaries."""


def train_fold_expert(
    expert: str,
    config,
    features: np.ndarray,
    coords: np.ndarray,
    authors: Sequence[str],
    budget: FoldBudget,
    gallery: GalleryIndex | None,
    encoder: LocationEncoder | None,
    seed: int = 0,
    log: Callable[[str], None] = print,
):
    """One expert trained in `config` (its fold_configs entry) on these photos alone (features [n, d],
    coords [n, 2] lat/lon, one author each), as the model its service holds, and what its training
    kept: it fits the photos outside an inner photographer-grouped hold-out
    (photographer_folds(authors, 5) == 0) and keeps its epoch or step by its score on that hold-out,
    every photo weighted in both as budget.photo_weighting says (photo_weights of the photos' own
    authors). Every trainer seeds its own generators, so an expert trains the same alone as beside
    the others. An expert whose trainer `needs_gallery` (the gallery head) needs `gallery` (a flat,
    exact index: its negatives are drawn from its vectors, and it retrieves from it) and `encoder`."""
    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.float64)
    if not len(features) == len(coords) == len(authors):
        raise ValueError(f"{len(features)} features, {len(coords)} coordinates and {len(authors)} authors")
    held_out = photographer_folds(authors, INNER_FOLDS) == 0
    fit, stop = ~held_out, held_out
    data = (features[fit], coords[fit], features[stop], coords[stop])
    weights = {}
    if budget.photo_weighting != "photo":  # one vote per photo: the unweighted loops, as they always drew
        weights = {
            "train_weight": photo_weights([a for a, f in zip(authors, fit, strict=True) if f], budget.photo_weighting),
            "val_weight": photo_weights([a for a, s in zip(authors, stop, strict=True) if s], budget.photo_weighting),
        }
    photos = FoldPhotos(*data, weights, BACKBONE, VERSION)
    started = time.monotonic()
    model, kept, line = registry.expert(expert).trainer().train(config, photos, gallery, encoder, seed, _quiet)
    log(f"  {line} ({time.monotonic() - started:.1f} s)")
    kept.update(
        seconds=round(time.monotonic() - started, 1), fit_photos=int(fit.sum()), stopping_photos=int(stop.sum())
    )
    return model, kept


def train_fold_experts(
    features: np.ndarray,
    coords: np.ndarray,
    authors: Sequence[str],
    budget: FoldBudget,
    gallery: GalleryIndex,
    encoder: LocationEncoder,
    seed: int = 0,
    log: Callable[[str], None] = print,
    trained_in: Mapping[str, Any] | None = None,
) -> ExpertModels:
    """Every trained expert trained on these photos alone, each as train_fold_expert trains it, in
    `trained_in` (default: fold_configs(budget))."""
    trained_in = trained_in or fold_configs(budget)
    trained = {
        e: train_fold_expert(e, trained_in[e], features, coords, authors, budget, gallery, encoder, seed, log)
        for e in TRAINED_EXPERTS
    }
    return ExpertModels({e: model for e, (model, _) in trained.items()}, kept={e: k for e, (_, k) in trained.items()})


def _cache_key(
    expert: str,
    config,
    features: np.ndarray,
    coords: np.ndarray,
    authors: Sequence[str],
    folds: np.ndarray,
    budget: FoldBudget,
    requests: ExpertRequests,
    seed: int,
    gallery: GalleryIndex | None,
) -> str:
    """A hash of everything one expert's answers depend on: the photos and folds, the photo
    weighting, what is asked of it (not of the others), the seed, the answer rule, `config` (its
    own training configuration: a retrained shipped model may have been chosen in another), and
    what its fold trainer adds (the gallery head: the gallery it retrieves from when one is passed;
    None stands for the default 100K gallery)."""
    digest = hashlib.sha256()
    for array in (np.asarray(features, dtype=np.float32), np.asarray(coords, dtype=np.float64), folds):
        digest.update(repr((array.shape, array.dtype.str)).encode() + array.tobytes())
    described = [expert, list(authors), budget.photo_weighting, requests.of_expert(expert), seed, repr(config)]
    described.append(ANSWER_RULE)
    described.extend(registry.expert(expert).trainer().cache_described(gallery))
    digest.update(json.dumps(described).encode())
    return digest.hexdigest()[:16]


def out_of_fold_outputs(
    features: np.ndarray,
    coords: np.ndarray,
    authors: Sequence[str],
    folds: np.ndarray,
    budget: FoldBudget,
    requests: ExpertRequests,
    cache_dir: Path,
    seed: int = 0,
    log: Callable[[str], None] = print,
    *,
    gallery: GalleryIndex | None = None,
    encoder: LocationEncoder | None = None,
    configs: Mapping[str, Mapping] | None = None,
    experts: Sequence[str] = TRAINED_EXPERTS,
) -> dict[str, np.ndarray]:
    """{expert: [n, points, 4] (lat, lon, weight, radius_km)}, as compute_expert_outputs gives them, where
    row i comes from experts trained (train_fold_expert) on the photos of the folds other than
    folds[i] only, in the configurations fold_configs(budget, configs) gives. `gallery` (a flat index)
    and `encoder` default to the default 100K gallery and GeoCLIP's location encoder, loaded only if
    the gallery expert of some fold is not cached. Each expert's answers to each fold are cached
    under cache_dir / "cv", keyed by what they depend on (_cache_key). Only `experts` are trained and answer."""
    folds = np.asarray(folds, dtype=np.int64)
    if not len(features) == len(coords) == len(authors) == len(folds):
        raise ValueError(
            f"{len(features)} features, {len(coords)} coordinates, {len(authors)} authors, {len(folds)} folds"
        )
    trained_in = fold_configs(budget, configs)  # a configuration that cannot be trained fails before any training
    # Keyed before any fold loads the default gallery, so that every fold's key is the same.
    keys = {
        e: _cache_key(e, trained_in[e], features, coords, authors, folds, budget, requests, seed, gallery)
        for e in experts
    }
    outputs: dict[str, np.ndarray] = {}
    for fold in np.unique(folds):
        answered_rows = folds == fold
        training_rows = np.flatnonzero(~answered_rows)
        for expert in experts:
            path = Path(cache_dir) / "cv" / f"{keys[expert]}-{expert}-fold{fold}.npz"
            if path.exists():
                with np.load(path) as saved:
                    answers = saved["answers"]
                log(f"fold {fold}: {expert}'s answers to {answered_rows.sum()} photos from {path}")
            else:
                log(f"fold {fold}: {answered_rows.sum()} photos answered by {expert} trained on the other folds")
                if registry.expert(expert).trainer().needs_gallery:
                    gallery = gallery if gallery is not None else loaded_gallery()
                    encoder = encoder if encoder is not None else LocationEncoder.pretrained()
                model, _ = train_fold_expert(
                    expert,
                    trained_in[expert],
                    features[training_rows],
                    coords[training_rows],
                    [authors[i] for i in training_rows],
                    budget,
                    gallery,
                    encoder,
                    seed,
                    log,
                )
                started = time.monotonic()
                answers = expert_answers(expert, model, features[answered_rows], requests, seed)
                log(f"  answers: {time.monotonic() - started:.1f} s")
                _save_atomically(path, {"answers": answers})
            if expert not in outputs:
                outputs[expert] = np.zeros((len(folds), *answers.shape[1:]))
            outputs[expert][answered_rows] = answers
    return outputs


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes the .npz under a temporary name first, so an interrupted run never leaves a partial cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as stream:
        np.savez_compressed(stream, **arrays)

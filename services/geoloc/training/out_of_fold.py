"""Out-of-fold expert answers: every photo answered by experts trained without its fold.

Cross-validating the fusion by photographer needs, for each photo, what the four experts answer
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
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from geoloc.artifacts.checkpoints import round_as_saved
from geoloc.artifacts.files import written_atomically
from geoloc.evaluation.folds import photo_weights, photographer_folds
from geoloc.experts import TRAINED_EXPERTS
from geoloc.gallery.heads import SHIPPED_HEADS, GalleryHead
from geoloc.gallery.index import GalleryIndex
from geoloc.gallery.location_encoder import LocationEncoder
from geoloc.gallery.retrieval import GalleryRetrieval, loaded_gallery
from geoloc.sampler.model import METHODS, SHIPPED_SAMPLERS
from geoloc.tokens.model import SHIPPED_TOKENS, TokenModel
from geoloc.training.expert_outputs import ExpertModels, ExpertRequests, expert_answers
from geoloc.training.gallery_head import HeadConfig, train_head
from geoloc.training.sampler import SamplerTrainConfig, train_sampler
from geoloc.training.token_decoder import TokenTrainConfig, train_decoder

BACKBONE = "efficientnet-lite2"
VERSION = "out-of-fold"
INNER_FOLDS = 5  # the inner hold-out is one fifth of the training photographers, as val is of Im2GPS3k's
SHIPPED_MANIFESTS = {
    "gallery": SHIPPED_HEADS / "efficientnet_lite2_head.json",
    "flow": SHIPPED_SAMPLERS / "flow.json",
    "sh": SHIPPED_SAMPLERS / "sh.json",
    "tokens": SHIPPED_TOKENS / "decoder.json",
}


@dataclass(frozen=True)
class FoldBudget:
    """How long each fold's experts train, and how they weight its photos. Everything else is the
    shipped configuration, or one compared under CV (fold_configs' `configs`)."""

    gallery_epochs: int = 3  # the shipped head's best epoch was 2
    flow_steps: int = 1500
    sh_steps: int = 750
    tokens_steps: int = 400
    evaluations: int = 5  # early-stopping evaluations per sampler and decoder run, evenly spaced
    eval_samples: int = 16  # samples per inner hold-out photo in the samplers' evaluations
    eval_steps: int = 8  # integration steps of those samples
    # Each training photo's weight in the experts' losses and stopping scores (evaluation/folds.WEIGHTINGS).
    # One vote per photo: cap10 lowered the fused CV GeoScore from 1101 to 1033 (docs/evaluation.md).
    photo_weighting: str = "photo"


@dataclass(frozen=True)
class FoldConfigs:
    """The training configuration of each expert for one fold."""

    gallery: HeadConfig
    flow: SamplerTrainConfig
    sh: SamplerTrainConfig
    tokens: TokenTrainConfig


def _shipped_choice(expert: str) -> dict:
    return json.loads(SHIPPED_MANIFESTS[expert].read_text())["chosen"]


def _config_of(config_type: type, chosen: dict):
    """`config_type` with the fields the manifest's `chosen` names (it also holds outcomes, such as best_step)."""
    return config_type(**{f.name: chosen[f.name] for f in fields(config_type) if f.name in chosen})


def fold_configs(budget: FoldBudget, configs: Mapping[str, Mapping] | None = None) -> FoldConfigs:
    """The shipped configurations with the budget's epochs, steps and evaluations, then `configs`:
    per expert, fields of its training configuration to use instead (a dict-valued field such as
    `network` is merged key by key), as a configuration compared under cross-validation.

    A sampler is stopped at, and serves at, the guidance the shipped one serves at (0 for both
    shipped samplers); no guidance is chosen here. Raises ValueError for an unknown expert or
    field, and for a token decoder that attends to gallery neighbours: expert_answers asks the
    token expert without them.
    """

    def every(steps: int) -> int:
        return max(steps // budget.evaluations, 1)

    def sampler(method: str, steps: int) -> SamplerTrainConfig:
        chosen = _shipped_choice(method)
        return replace(
            _config_of(SamplerTrainConfig, chosen),
            steps=steps,
            eval_every=every(steps),
            eval_samples=budget.eval_samples,
            eval_steps=budget.eval_steps,
            eval_guidance=float(chosen.get("guidance", chosen["eval_guidance"])),
        )

    tokens = _config_of(TokenTrainConfig, _shipped_choice("tokens"))
    shipped = FoldConfigs(
        gallery=replace(_config_of(HeadConfig, _shipped_choice("gallery")), epochs=budget.gallery_epochs),
        flow=sampler("flow", budget.flow_steps),
        sh=sampler("sh", budget.sh_steps),
        tokens=replace(tokens, steps=budget.tokens_steps, eval_every=every(budget.tokens_steps)),
    )
    unknown = sorted(set(configs or {}) - set(TRAINED_EXPERTS))
    if unknown:
        raise ValueError(f"no expert named {', '.join(unknown)}; the experts are {', '.join(TRAINED_EXPERTS)}")
    chosen = replace(shipped, **{e: with_fields(getattr(shipped, e), c, e) for e, c in (configs or {}).items()})
    if chosen.tokens.network.get("neighbours", 0):
        raise ValueError("the token decoder would attend to gallery neighbours; out-of-fold answers have none")
    return chosen


# Set by the fold budget for every expert alike: a change to one of them belongs in FoldBudget.
BUDGET_FIELDS = ("epochs", "steps", "eval_every", "eval_samples", "eval_steps", "eval_guidance")


def with_fields(config, changes: Mapping, expert: str = "the expert"):
    """`config` (a training configuration dataclass) with `changes`; dict-valued fields merged."""
    names = {f.name for f in fields(config)} - set(BUDGET_FIELDS)
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(
            f"{expert}'s training configuration has no field {', '.join(unknown)} to change; "
            f"it has {', '.join(sorted(names))} (the fold budget sets {', '.join(BUDGET_FIELDS)})"
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
    """One expert trained in `config` (its FoldConfigs entry) on these photos alone (features [n, d],
    coords [n, 2] lat/lon, one author each), as the model its service holds, and what its training
    kept: it fits the photos outside an inner photographer-grouped hold-out
    (photographer_folds(authors, 5) == 0) and keeps its epoch or step by its score on that hold-out,
    every photo weighted in both as budget.photo_weighting says (photo_weights of the photos' own
    authors). Every trainer seeds its own generators, so an expert trains the same alone as beside
    the others. The gallery head needs `gallery` (a flat, exact index: its negatives are drawn from
    its vectors, and it retrieves from it) and `encoder`."""
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
    started = time.monotonic()
    if expert == "gallery":
        head = train_head(*data, gallery.vectors(), gallery.coordinates, encoder, config, seed, _quiet, **weights)
        model = GalleryRetrieval(GalleryHead(head.mlp, head.logit_scale, BACKBONE, VERSION), gallery)
        kept = {"best_epoch": head.best_epoch}
        log(f"  gallery head: {time.monotonic() - started:.1f} s, epoch {head.best_epoch} kept")
    elif expert in METHODS:
        trained = train_sampler(*data, config, BACKBONE, seed, log=_quiet, **weights)
        model, kept = trained.sampler, {"best_step": trained.best_step}
        log(f"  {expert} sampler: {trained.seconds:.1f} s, step {trained.best_step} kept")
    else:
        decoder = train_decoder(*data, config, seed=seed, log=_quiet, **weights)
        round_as_saved(decoder.decoder)  # a fold's decoder answers as it would once saved and loaded
        model = TokenModel(decoder.decoder, decoder.standardiser, BACKBONE, VERSION)
        kept = {"best_step": decoder.best_step}
        log(f"  token decoder: {decoder.seconds:.1f} s, step {decoder.best_step} kept")
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
    trained_in: FoldConfigs | None = None,
) -> ExpertModels:
    """The four experts trained on these photos alone, each as train_fold_expert trains it, in
    `trained_in` (default: fold_configs(budget))."""
    trained_in = trained_in or fold_configs(budget)
    trained = {
        e: train_fold_expert(e, getattr(trained_in, e), features, coords, authors, budget, gallery, encoder, seed, log)
        for e in TRAINED_EXPERTS
    }
    return ExpertModels(**{e: model for e, (model, _) in trained.items()}, kept={e: k for e, (_, k) in trained.items()})


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
    weighting, what is asked of it (not of the others), the seed and `config`, its own training configuration (a
    retrained shipped model may have been chosen in another), and for the gallery expert the
    gallery it retrieves from when one is passed (None stands for the default 100K gallery)."""
    digest = hashlib.sha256()
    for array in (np.asarray(features, dtype=np.float32), np.asarray(coords, dtype=np.float64), folds):
        digest.update(repr((array.shape, array.dtype.str)).encode() + array.tobytes())
    described = [expert, list(authors), budget.photo_weighting, requests.of_expert(expert), seed, repr(config)]
    if expert == "gallery" and gallery is not None:
        described.append([gallery.manifest.encoder_sha256, gallery.manifest.count, gallery.manifest.sources])
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
        e: _cache_key(e, getattr(trained_in, e), features, coords, authors, folds, budget, requests, seed, gallery)
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
                if expert == "gallery":
                    gallery = gallery if gallery is not None else loaded_gallery()
                    encoder = encoder if encoder is not None else LocationEncoder.pretrained()
                model, _ = train_fold_expert(
                    expert,
                    getattr(trained_in, expert),
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

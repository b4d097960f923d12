"""Training a sampler on backbone features, and choosing its checkpoint and guidance on val.

One loop serves both methods: minibatches of (feature, place) pairs, the method's own loss
(flow matching or coefficient denoising, both with 10 % condition dropout), AdamW with a
cosine decay. With photo weights, minibatches draw each photo with probability proportional to
its weight (the weighted loss, in expectation), and the stopping score is weighted too. Every
`eval_every` steps the model draws samples for every val photo, takes the top mode of each
photo's samples as its one guess (docs/design.md §3.6's protocol), and the step with the best
val GeoScore is kept. The guidance is then chosen on val among a few values. Nothing here
assumes a CPU or a small set: pass device="cuda" and any number of features.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from geoloc.artifacts.checkpoints import round_as_saved
from geoloc.evaluation.metrics import Metrics, summarize
from geoloc.geo.sphere import haversine_km, latlon_to_unit
from geoloc.sampler import flow, sh_diffusion
from geoloc.sampler.density import summarize_samples
from geoloc.sampler.model import LocationSampler, build_network
from geoloc.training.fold_budget import FoldTrainer, config_of
from geoloc.training.loop import BatchShards, minibatch_draw, train_keeping_best
from geoloc.training.mapped_features import feature_moments, feature_rows


@dataclass(frozen=True)
class SamplerTrainConfig:
    method: str
    network: dict = field(default_factory=dict)  # the method's network config, beyond embedding_dim
    steps: int = 6000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    feature_dropout: float = 0.0  # on the standardised features, against memorising 1.5K photos
    drop_condition: float = 0.1
    eval_every: int = 500
    eval_samples: int = 32
    eval_steps: int = 16
    eval_guidance: float = 0.0


@dataclass
class TrainedSampler:
    sampler: LocationSampler
    config: SamplerTrainConfig
    best_step: int
    val: Metrics
    history: list[tuple[int, float]]  # (step, val GeoScore)
    seconds: float


def point_estimates(
    sampler: LocationSampler,
    features: np.ndarray,
    n_samples: int,
    steps: int,
    guidance: float,
    seed: int = 0,
    batch: int = 64,
) -> np.ndarray:
    """One guess per photo, (lat, lon) [q, 2]: the top mode of its n_samples samples."""
    generator = torch.Generator().manual_seed(seed)
    guesses = []
    for start in range(0, len(features), batch):
        places = sampler.sample_places(features[start : start + batch], n_samples, steps, guidance, generator)
        for xyz in places:
            top = summarize_samples(xyz).modes[0]
            guesses.append((top.lat_deg, top.lon_deg))
    return np.asarray(guesses)


def val_metrics(
    sampler: LocationSampler,
    features: np.ndarray,
    coordinates: np.ndarray,
    n_samples: int,
    steps: int,
    guidance: float,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> Metrics:
    guesses = point_estimates(sampler, features, n_samples, steps, guidance, seed)
    return summarize(haversine_km(coordinates[:, 0], coordinates[:, 1], guesses[:, 0], guesses[:, 1]), weights=weights)


def training_targets(method: str, coordinates: np.ndarray, network: torch.nn.Module) -> torch.Tensor:
    """What the method learns to generate, per photo: unit vectors [n, 3] or scaled coefficients [n, C]."""
    if method == "flow":
        return torch.from_numpy(latlon_to_unit(coordinates[:, 0], coordinates[:, 1])).float()
    return sh_diffusion.place_coefficients(coordinates[:, 0], coordinates[:, 1], network.config.degree)


def train_sampler(
    train_features: np.ndarray,
    train_coordinates: np.ndarray,
    val_features: np.ndarray,
    val_coordinates: np.ndarray,
    config: SamplerTrainConfig,
    backbone: str,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    *,
    train_weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
    shards: BatchShards | None = None,
) -> TrainedSampler:
    """The sampler trained on the train photos, kept at its best step on the val photos; the weights
    (one per photo, default all alike) weight the minibatch draws and the stopping score."""
    started = time.monotonic()
    torch.manual_seed(seed)
    network = build_network(config.method, {"embedding_dim": train_features.shape[1], **config.network}).to(device)
    mean, std = feature_moments(train_features)
    sampler = LocationSampler(config.method, network, mean, std.clamp_min(1e-6), backbone, config.eval_guidance)
    sampler = sampler.to(device)
    targets = training_targets(config.method, train_coordinates, network).to(device)
    loss_of = flow.flow_matching_loss if config.method == "flow" else sh_diffusion.denoising_loss

    batch_size = config.batch_size if shards is None else shards.shard_size(config.batch_size)
    draw = minibatch_draw(len(train_features), batch_size, train_weight, device)

    def batch_loss() -> torch.Tensor:
        batch = draw()  # its rows only are read: the features may be memory-mapped
        condition = torch.nn.functional.dropout(
            sampler.conditions(feature_rows(train_features, batch)), config.feature_dropout
        )
        return loss_of(network, targets[batch], condition, config.drop_condition)

    def evaluate() -> Metrics:
        return val_metrics(
            sampler,
            val_features,
            val_coordinates,
            config.eval_samples,
            config.eval_steps,
            config.eval_guidance,
            seed,
            val_weight,
        )

    best = train_keeping_best(
        network,
        batch_loss,
        evaluate,
        config.steps,
        config.eval_every,
        config.learning_rate,
        config.weight_decay,
        log,
        shards=shards,
    )
    # The checkpoint stores half precision; keep the model as it will be loaded, so that every
    # figure reported from here on is the shipped file's.
    round_as_saved(network)
    return TrainedSampler(sampler, config, best.step, best.val, best.history, time.monotonic() - started)


def choose_guidance(
    sampler: LocationSampler,
    features: np.ndarray,
    coordinates: np.ndarray,
    n_samples: int,
    steps: int,
    candidates=(0.0, 1.0, 2.0, 4.0),
    seed: int = 0,
) -> dict[float, Metrics]:
    """Val metrics at each candidate guidance; sets the sampler's default to the best by GeoScore."""
    results = {g: val_metrics(sampler, features, coordinates, n_samples, steps, g, seed) for g in candidates}
    sampler.default_guidance = max(results, key=lambda g: results[g].geoscore)
    return results


@dataclass(frozen=True)
class SamplerFoldTrainer(FoldTrainer):
    """A sampler expert's fold trainer (training/fold_budget.FoldTrainer); its name is its method.
    It stops at, and serves at, the guidance its shipped sampler serves at (no guidance is chosen
    on a fold)."""

    def shipped_config(self, chosen: dict, budget) -> SamplerTrainConfig:
        steps = getattr(budget, f"{self.name}_steps")
        return replace(
            config_of(SamplerTrainConfig, chosen),
            steps=steps,
            eval_every=budget.every(steps),
            eval_samples=budget.eval_samples,
            eval_steps=budget.eval_steps,
            eval_guidance=float(chosen.get("guidance", chosen["eval_guidance"])),
        )

    def train(self, config: SamplerTrainConfig, photos, gallery, encoder, seed: int, log):
        trained = train_sampler(*photos.arrays, config, photos.backbone, seed, log=log, **photos.weights)
        return trained.sampler, {"best_step": trained.best_step}, f"{self.name} sampler: step {trained.best_step} kept"

    def save(self, path, model: LocationSampler) -> str:
        from geoloc.sampler.model import save_sampler

        return save_sampler(path, model)

    def manifest_fields(self, config: SamplerTrainConfig, model: LocationSampler, gallery) -> tuple[dict, dict]:
        return {**asdict(config), "guidance": model.default_guidance}, {"method": self.name}

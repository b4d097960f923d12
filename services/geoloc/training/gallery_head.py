"""Training the gallery head: backbone features -> GeoCLIP's location space, contrastively.

As GeoCLIP trains its image side: the location encoder is frozen; each photo's positive is its
own GPS, perturbed by Gaussian noise of a few km so that nearby places share the answer; its
negatives are the other positives of the batch and a fresh draw of 4096 points from the 100K
GPS gallery (GeoCLIP keeps a queue of recent GPS; since the encoder is frozen, drawing from the
gallery's precomputed embeddings is the same idea, without re-encoding). The loss is the
cross-entropy of logit_scale * cosine, with the scale learnt; with photo weights, each photo's
term counts by its weight (evaluation/folds.photo_weights), so a burst cannot dominate. The
epoch is kept by the (weighted) GeoScore of the top-1 gallery point on the stopping photos.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from geoloc.evaluation.metrics import Metrics, summarize
from geoloc.gallery.build import embed_locations
from geoloc.gallery.heads import ImageMLP
from geoloc.gallery.location_encoder import LocationEncoder
from geoloc.geo.sphere import haversine_km
from geoloc.training.fold_budget import FoldTrainer, config_of
from geoloc.training.loop import BatchShards, shard_stream, sum_over_processes
from geoloc.training.mapped_features import feature_moments, feature_rows

KM_PER_DEGREE = 111.195


@dataclass(frozen=True)
class HeadConfig:
    hidden_dim: int = 768
    dropout: float = 0.2
    gps_noise_km: float = 25.0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 40
    batch_size: int = 128
    negatives: int = 4096
    perturbations: int = 8


@dataclass
class TrainedHead:
    mlp: ImageMLP
    logit_scale: float
    config: HeadConfig
    best_epoch: int
    val: Metrics


def perturbed(coordinates: np.ndarray, noise_km: float, copies: int, rng: np.random.Generator) -> np.ndarray:
    """`copies` noisy versions [copies, n, 2] of (lat, lon) points, noise_km standard deviation."""
    lat = coordinates[None, :, 0] + rng.normal(0, noise_km / KM_PER_DEGREE, (copies, len(coordinates)))
    stretch = np.maximum(np.cos(np.radians(coordinates[None, :, 0])), 0.05)
    lon = coordinates[None, :, 1] + rng.normal(0, noise_km / KM_PER_DEGREE, (copies, len(coordinates))) / stretch
    return np.stack([np.clip(lat, -90, 90), (lon + 180) % 360 - 180], axis=-1)


def top1_metrics(
    mlp: ImageMLP,
    features: np.ndarray,
    coordinates: np.ndarray,
    gallery_vectors: np.ndarray,
    gallery_coordinates: np.ndarray,
    weights: np.ndarray | None = None,
) -> Metrics:
    """Accuracy of the top-1 gallery point for each photo (the gallery expert's point estimate),
    weighted by `weights` when given."""
    mlp.eval()
    with torch.inference_mode():
        queries = nn.functional.normalize(mlp(torch.as_tensor(features)), dim=1).numpy()
    best = np.argmax(queries @ gallery_vectors.T, axis=1)
    guesses = gallery_coordinates[best]
    return summarize(haversine_km(coordinates[:, 0], coordinates[:, 1], guesses[:, 0], guesses[:, 1]), weights=weights)


def train_head(
    train_features: np.ndarray,
    train_coordinates: np.ndarray,
    val_features: np.ndarray,
    val_coordinates: np.ndarray,
    gallery_vectors: np.ndarray,
    gallery_coordinates: np.ndarray,
    encoder: LocationEncoder,
    config: HeadConfig,
    seed: int = 0,
    log=print,
    *,
    train_weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
    shards: BatchShards | None = None,
) -> TrainedHead:
    """The head trained on the train photos, kept at its best epoch on the val photos; the weights
    (one per photo, default all alike) weight the loss and the stopping score. With `shards`, each
    batch's queries are cut into shards (training/loop.BatchShards) against the whole batch's keys."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    positives = embed_locations(
        encoder,
        perturbed(train_coordinates, config.gps_noise_km, config.perturbations, rng).reshape(-1, 2),
        progress=False,
    ).reshape(config.perturbations, len(train_coordinates), -1)
    positives, gallery = torch.from_numpy(positives), torch.from_numpy(gallery_vectors)
    weight = None if train_weight is None else torch.as_tensor(train_weight, dtype=torch.float32)

    mlp = ImageMLP(train_features.shape[1], config.hidden_dim, config.dropout)
    mean, std = feature_moments(train_features)
    mlp.shift.copy_(mean)
    mlp.scale.copy_(1 / std.clamp_min(1e-6))
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    optimizer = torch.optim.AdamW(
        [*mlp.parameters(), log_scale], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    best: tuple[float, int, dict, float, Metrics] | None = None
    step = 0
    for epoch in range(1, config.epochs + 1):
        mlp.train()
        order = torch.randperm(len(train_features))
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            pick = torch.randint(0, config.perturbations, (len(batch),))
            keys = torch.cat([positives[pick, batch], gallery[torch.randint(0, len(gallery), (config.negatives,))]])
            optimizer.zero_grad()
            if shards is None:
                queries = nn.functional.normalize(mlp(torch.from_numpy(feature_rows(train_features, batch))), dim=1)
                logits = log_scale.clamp(max=math.log(100)).exp() * queries @ keys.T
                if weight is None:
                    loss = nn.functional.cross_entropy(logits, torch.arange(len(batch)))
                else:
                    terms = nn.functional.cross_entropy(logits, torch.arange(len(batch)), reduction="none")
                    loss = terms @ weight[batch] / weight[batch].sum().clamp_min(1e-12)
                loss.backward()
            else:
                step += 1
                loss = _sharded_contrastive_backward(mlp, log_scale, train_features, batch, keys, weight, shards, step)
            optimizer.step()
        scale = float(log_scale.detach().clamp(max=math.log(100)).exp())
        val = top1_metrics(mlp, val_features, val_coordinates, gallery_vectors, gallery_coordinates, val_weight)
        if best is None or val.geoscore > best[0]:
            best = (val.geoscore, epoch, {k: v.clone() for k, v in mlp.state_dict().items()}, scale, val)
        log(
            f"  epoch {epoch:3d}  loss {loss.item():.3f}  scale {scale:5.1f}  val GeoScore {val.geoscore:6.1f}  "
            f"median {val.median_km:7.0f} km"
        )
    _, epoch, state, scale, val = best
    mlp.load_state_dict(state)
    return TrainedHead(mlp.eval(), scale, config, epoch, val)


def _sharded_contrastive_backward(
    mlp: ImageMLP,
    log_scale: nn.Parameter,
    features: np.ndarray,
    batch: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor | None,
    shards: BatchShards,
    step: int,
) -> torch.Tensor:
    """This process's share of the batch's loss gradient. The keys (the batch's positives and the
    drawn negatives) come from the frozen location encoder and carry no gradient, so each photo's
    term is a function of its own query alone: the shards' terms, each over the whole batch's
    keys, add up to the batch's loss. Every process draws the batch and the keys alike; only the
    queries' dropout is drawn per shard."""
    weights = torch.ones(len(batch)) if weight is None else weight[batch]
    norm = weights.sum().clamp_min(1e-12)
    rows = torch.tensor_split(torch.arange(len(batch)), shards.count)
    total = torch.zeros(())
    for shard in shards.mine:
        with shard_stream(shards, shard, step, mlp):
            queries = nn.functional.normalize(mlp(torch.from_numpy(feature_rows(features, batch[rows[shard]]))), dim=1)
        logits = log_scale.clamp(max=math.log(100)).exp() * queries @ keys.T
        terms = nn.functional.cross_entropy(logits, rows[shard], reduction="none")
        loss = terms @ weights[rows[shard]] / norm
        loss.backward()
        total = total + loss.detach()
    return sum_over_processes([*mlp.parameters(), log_scale], shards, total)


def config_grid() -> list[HeadConfig]:
    """The configurations compared on val: dropout and the GPS perturbation, which matter most
    with 1542 training photos."""
    return [HeadConfig(dropout=d, gps_noise_km=n) for d in (0.2, 0.5) for n in (10.0, 100.0)]


@dataclass(frozen=True)
class HeadFoldTrainer(FoldTrainer):
    """The gallery expert's fold trainer (training/fold_budget.FoldTrainer): a head trained for the
    budget's epochs, retrieving from the fold's gallery (its negatives are drawn from its vectors)."""

    needs_gallery: bool = True

    def shipped_config(self, chosen: dict, budget) -> HeadConfig:
        return replace(config_of(HeadConfig, chosen), epochs=budget.gallery_epochs)

    def train(self, config: HeadConfig, photos, gallery, encoder, seed: int, log):
        from geoloc.gallery.heads import GalleryHead
        from geoloc.gallery.retrieval import GalleryRetrieval

        head = train_head(
            *photos.arrays, gallery.vectors(), gallery.coordinates, encoder, config, seed, log, **photos.weights
        )
        model = GalleryRetrieval(GalleryHead(head.mlp, head.logit_scale, photos.backbone, photos.version), gallery)
        return model, {"best_epoch": head.best_epoch}, f"gallery head: epoch {head.best_epoch} kept"

    def save(self, path, model) -> str:
        from geoloc.gallery.heads import save_head

        return save_head(path, model.head.mlp, model.head.logit_scale, model.head.backbone)

    def manifest_fields(self, config: HeadConfig, model, gallery) -> tuple[dict, dict]:
        chosen = {**asdict(config), "logit_scale": model.head.logit_scale}
        described = {"count": gallery.manifest.count, "sources": gallery.manifest.sources}
        return chosen, {"gallery": described, "location_encoder_sha256": gallery.manifest.encoder_sha256}

    def served(self, path, gallery):
        from geoloc.gallery.retrieval import GalleryRetrieval

        return GalleryRetrieval(super().served(path, gallery), gallery)

    def cache_described(self, gallery) -> list:
        # None stands for the default 100K gallery, which a fold loads only when it trains.
        if gallery is None:
            return []
        return [[gallery.manifest.encoder_sha256, gallery.manifest.count, gallery.manifest.sources]]

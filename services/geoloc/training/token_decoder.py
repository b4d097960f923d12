"""Training the token decoder on backbone features, choosing the step on val.

Each photo's target is its level-20 S2 cell as 11 tokens. Minibatches of standardised features
(with feature dropout against memorising a small set) and tokens, the position-weighted loss,
optionally the gallery's neighbours of each photo (whole sets dropped at `neighbour_dropout`, so
that the decoder also answers when the orchestrator has no gallery answer to pass),
AdamW with a cosine decay (with photo weights, minibatches drawn in proportion to them); every
`eval_every` steps the greedy decode of every val photo is scored (the cell centre as the one
guess, weighted as the photos are) and the best step is kept. Pass device="cuda" and any
number of features: nothing here assumes a CPU or a small set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from geoloc.evaluation.metrics import Metrics, summarize
from geoloc.geo.s2cells import cell_id_to_latlon, latlon_to_cell_id
from geoloc.geo.sphere import haversine_km
from geoloc.tokens.cells import Strategy, decode_photo
from geoloc.tokens.decoder import Neighbours, TokenDecoder, TokenDecoderConfig, token_loss
from geoloc.tokens.geotokens import cell_id_to_tokens, tokens_to_cell_id
from geoloc.tokens.model import Standardiser, TokenModel
from geoloc.tokens.search import greedy
from geoloc.training.fold_budget import FoldTrainer, config_of
from geoloc.training.loop import BatchShards, minibatch_draw, train_keeping_best
from geoloc.training.mapped_features import feature_moments, feature_rows


@dataclass(frozen=True)
class TokenTrainConfig:
    network: dict = field(default_factory=dict)  # TokenDecoderConfig fields beyond embedding_dim
    steps: int = 3000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    feature_dropout: float = 0.5
    neighbour_dropout: float = 0.3
    eval_every: int = 500


def place_tokens(coordinates: np.ndarray) -> torch.Tensor:
    """The level-20 cell tokens [n, 11] of (lat, lon) rows."""
    cells = latlon_to_cell_id(coordinates[:, 0], coordinates[:, 1], 20)
    return torch.tensor([cell_id_to_tokens(int(c)) for c in np.atleast_1d(cells)])


def cell_centres(tokens: torch.Tensor) -> np.ndarray:
    """(lat, lon) [n, 2] of the cells that token rows [n, k] name (k tokens: level 2(k-1))."""
    cells = np.array([tokens_to_cell_id(tuple(row)) for row in tokens.tolist()], dtype=np.uint64)
    lat, lon = cell_id_to_latlon(cells)
    return np.stack([lat, lon], axis=1)


def greedy_metrics(
    decoder: TokenDecoder,
    conditions: torch.Tensor,
    coordinates: np.ndarray,
    neighbours: Neighbours | None = None,
    weights: np.ndarray | None = None,
) -> Metrics:
    """Scores the greedy level-20 cell's centre as the one guess per photo (weighted by `weights`)."""
    guesses = cell_centres(greedy(decoder, conditions, neighbours=neighbours).tokens.cpu())
    return summarize(haversine_km(coordinates[:, 0], coordinates[:, 1], guesses[:, 0], guesses[:, 1]), weights=weights)


@dataclass
class TrainedDecoder:
    decoder: TokenDecoder
    standardiser: Standardiser
    config: TokenTrainConfig
    best_step: int
    val: Metrics
    history: list[tuple[int, float]]
    seconds: float


def train_decoder(
    train_features: np.ndarray,
    train_coordinates: np.ndarray,
    val_features: np.ndarray,
    val_coordinates: np.ndarray,
    config: TokenTrainConfig,
    train_neighbours: Neighbours | None = None,
    val_neighbours: Neighbours | None = None,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    *,
    train_weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
    shards: BatchShards | None = None,
) -> TrainedDecoder:
    """Trains a decoder, conditioned on neighbours when given (config.network["neighbours"] slots);
    the weights (one per photo, default all alike) weight the minibatch draws and the stopping score."""
    started = time.monotonic()
    torch.manual_seed(seed)
    mean, std = feature_moments(train_features)
    standardiser = Standardiser(mean, std.clamp_min(1e-6)).to(device)
    decoder = TokenDecoder(TokenDecoderConfig(embedding_dim=train_features.shape[1], **config.network)).to(device)
    targets = place_tokens(train_coordinates).to(device)
    val_conditions = standardiser(val_features)
    if (train_neighbours is None) != (val_neighbours is None):
        raise ValueError("give neighbours for both train and val, or for neither")
    if train_neighbours is not None:
        train_neighbours, val_neighbours = train_neighbours.to(device), val_neighbours.to(device)

    batch_size = config.batch_size if shards is None else shards.shard_size(config.batch_size)
    draw = minibatch_draw(len(train_features), batch_size, train_weight, device)

    def batch_loss() -> torch.Tensor:
        batch = draw()  # its rows only are read: the features may be memory-mapped
        condition = torch.nn.functional.dropout(
            standardiser(feature_rows(train_features, batch)), config.feature_dropout
        )
        neighbours = None
        if train_neighbours is not None:
            neighbours = train_neighbours.rows(batch)
            kept = torch.rand(len(batch), 1, device=device) >= config.neighbour_dropout
            neighbours = Neighbours(neighbours.tokens, neighbours.weights * kept)
        return token_loss(decoder, condition, targets[batch], neighbours)

    def evaluate() -> Metrics:
        return greedy_metrics(decoder, val_conditions, val_coordinates, val_neighbours, val_weight)

    best = train_keeping_best(
        decoder,
        batch_loss,
        evaluate,
        config.steps,
        config.eval_every,
        config.learning_rate,
        config.weight_decay,
        log,
        shards=shards,
    )
    return TrainedDecoder(decoder, standardiser, config, best.step, best.val, best.history, time.monotonic() - started)


def strategy_metrics(
    model: TokenModel,
    features: np.ndarray,
    coordinates: np.ndarray,
    strategy: Strategy,
    neighbours: Neighbours | None = None,
    seed: int = 0,
    **options,
) -> Metrics:
    """Scores the most probable cell of `strategy` (with decode_photo's options) per photo [n, d]."""
    generator = torch.Generator().manual_seed(seed)
    guesses = []
    for row, feature in enumerate(features):
        given = None if neighbours is None else neighbours.rows(torch.tensor([row]))
        top = decode_photo(model, feature, strategy, neighbours=given, generator=generator, **options)[0]
        guesses.append((top.lat_deg, top.lon_deg))
    guesses = np.array(guesses)
    return summarize(haversine_km(coordinates[:, 0], coordinates[:, 1], guesses[:, 0], guesses[:, 1]))


@dataclass(frozen=True)
class DecoderFoldTrainer(FoldTrainer):
    """The token expert's fold trainer (training/fold_budget.FoldTrainer): the decoder reads the
    backbone feature alone, since a fold's photos have no gallery neighbours of their own."""

    def shipped_config(self, chosen: dict, budget) -> TokenTrainConfig:
        steps = budget.tokens_steps
        return replace(config_of(TokenTrainConfig, chosen), steps=steps, eval_every=budget.every(steps))

    def check(self, config: TokenTrainConfig) -> None:
        if config.network.get("neighbours", 0):
            raise ValueError("the token decoder would attend to gallery neighbours; out-of-fold answers have none")

    def train(self, config: TokenTrainConfig, photos, gallery, encoder, seed: int, log):
        from geoloc.artifacts.checkpoints import round_as_saved

        trained = train_decoder(*photos.arrays, config, seed=seed, log=log, **photos.weights)
        round_as_saved(trained.decoder)  # a fold's decoder answers as it would once saved and loaded
        model = TokenModel(trained.decoder, trained.standardiser, photos.backbone, photos.version)
        return model, {"best_step": trained.best_step}, f"token decoder: step {trained.best_step} kept"

    def save(self, path, model: TokenModel) -> str:
        from geoloc.tokens.model import save_token_model

        return save_token_model(path, model)

    def manifest_fields(self, config: TokenTrainConfig, model: TokenModel, gallery) -> tuple[dict, dict]:
        neighbours = {"count": 0, "source": "none: the decoder reads the backbone feature alone"}
        return asdict(config), {"neighbours": neighbours}

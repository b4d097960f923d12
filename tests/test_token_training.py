"""Training the token decoder (tokens issue, groundwork) on a synthetic feature set."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from geoloc.artifacts.checkpoints import float_weights, half_precision_weights, round_as_saved
from geoloc.geo.s2cells import latlon_to_cell_id
from geoloc.geo.sphere import haversine_km
from geoloc.tokens.geotokens import cell_id_to_tokens
from geoloc.tokens.model import TokenModel, load_token_model, save_token_model
from geoloc.tokens.search import greedy
from geoloc.training.loop import minibatch_draw
from geoloc.training.token_decoder import TokenTrainConfig, cell_centres, place_tokens, train_decoder

PLACES = np.array([(48.8584, 2.2945), (-33.8568, 151.2153)])
SMALL = TokenTrainConfig(
    network={"width": 32, "depth": 1, "heads": 2, "dropout": 0.0},
    steps=150,
    batch_size=64,
    learning_rate=3e-3,
    feature_dropout=0.0,
    eval_every=50,
)


def test_place_tokens_and_cell_centres_round_trip_within_a_level_20_cell():
    tokens = place_tokens(PLACES)
    assert tuple(tokens[0].tolist()) == cell_id_to_tokens(int(latlon_to_cell_id(*PLACES[0], 20)))
    centres = cell_centres(tokens)
    assert np.abs(centres - PLACES).max() < 1e-4  # a level-20 cell is about 10 m across


def test_training_learns_which_features_mean_which_place_and_keeps_the_best_step(tmp_path):
    rng = np.random.default_rng(0)
    which = rng.integers(0, 2, 300)
    features = (rng.normal(size=(300, 16)) + 4 * np.eye(2, 16)[which]).astype(np.float32)
    coordinates = PLACES[which]
    config = SMALL
    trained = train_decoder(
        features[:200], coordinates[:200], features[200:], coordinates[200:], config, log=lambda _: None
    )
    assert trained.val.accuracy_at(1) > 0.95 and len(trained.history) == 3
    assert trained.best_step == max(trained.history, key=lambda h: h[1])[0]

    # saved and loaded: the half-precision weights, the standardisation and the backbone, versioned by the file
    sha = save_token_model(tmp_path / "decoder.pt", TokenModel(trained.decoder, trained.standardiser, "synthetic"))
    loaded = load_token_model(tmp_path / "decoder.pt")
    assert loaded.version == sha[:12] and loaded.backbone == "synthetic" and loaded.in_dim == 16
    assert torch.equal(loaded.standardiser.mean, trained.standardiser.mean)
    assert torch.equal(loaded.standardiser.std, trained.standardiser.std)
    expected = float_weights(half_precision_weights(trained.decoder))
    assert all(torch.equal(value, expected[name]) for name, value in loaded.decoder.state_dict().items())
    round_as_saved(trained.decoder)  # the trained decoder as stored answers as the loaded one
    conditions = loaded.standardiser(features[200:])
    served, stored = greedy(loaded.decoder, conditions), greedy(trained.decoder, conditions)
    assert torch.equal(served.tokens, stored.tokens) and torch.equal(served.log_probs, stored.log_probs)


def test_minibatches_draw_photos_in_proportion_to_their_weights():
    draw = minibatch_draw(3, 4000, np.array([0.0, 1.0, 3.0]))
    counts = np.bincount(draw().numpy(), minlength=3)
    assert counts[0] == 0 and abs(counts[2] / 4000 - 0.75) < 0.03
    uniform = np.bincount(minibatch_draw(3, 3000, None)().numpy(), minlength=3)
    assert uniform.min() > 900
    with pytest.raises(ValueError, match="photo weights must be 3 non-negative numbers"):
        minibatch_draw(3, 8, np.array([1.0, -1.0, 1.0]))


def test_a_burst_weighted_out_of_training_and_stopping_does_not_decide_the_answer():
    """Features that say nothing (all the same): unweighted, the decoder answers the majority's place (a burst of
    240 photos in Paris) for every photo; with the burst's photos weighted to zero in the loss and
    the stopping score, it answers the minority's (Sydney)."""
    rng = np.random.default_rng(1)
    features = np.ones((360, 16), dtype=np.float32)
    which = np.r_[np.zeros(240, int), np.ones(120, int)]
    rng.shuffle(which)
    coordinates = PLACES[which]
    weight = (which == 1).astype(float)
    config = replace(SMALL, steps=100)
    train, val = slice(0, 300), slice(300, 360)

    def answers(**weights) -> np.ndarray:
        trained = train_decoder(
            features[train], coordinates[train], features[val], coordinates[val], config, log=lambda _: None, **weights
        )
        conditions = trained.standardiser(features[val])
        return cell_centres(greedy(trained.decoder, conditions).tokens)

    def near(guesses: np.ndarray, place: np.ndarray) -> float:
        return float(np.mean(haversine_km(guesses[:, 0], guesses[:, 1], place[0], place[1]) < 100))

    assert near(answers(), PLACES[0]) > 0.9
    assert near(answers(train_weight=weight[train], val_weight=weight[val]), PLACES[1]) > 0.9

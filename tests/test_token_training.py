"""Training the token decoder (tokens issue, groundwork) on a synthetic feature set."""

from __future__ import annotations

import numpy as np

from geoloc.common.s2cells import latlon_to_cell_id
from geoloc.tokens.geotokens import cell_id_to_tokens
from geoloc.training.token_decoder import TokenTrainConfig, cell_centres, place_tokens, train_decoder

PLACES = np.array([(48.8584, 2.2945), (-33.8568, 151.2153)])


def test_place_tokens_and_cell_centres_round_trip_within_a_level_20_cell():
    tokens = place_tokens(PLACES)
    assert tuple(tokens[0].tolist()) == cell_id_to_tokens(int(latlon_to_cell_id(*PLACES[0], 20)))
    centres = cell_centres(tokens)
    assert np.abs(centres - PLACES).max() < 1e-4  # a level-20 cell is about 10 m across


def test_training_learns_which_features_mean_which_place_and_keeps_the_best_step():
    rng = np.random.default_rng(0)
    which = rng.integers(0, 2, 300)
    features = (rng.normal(size=(300, 16)) + 4 * np.eye(2, 16)[which]).astype(np.float32)
    coordinates = PLACES[which]
    config = TokenTrainConfig(
        network={"width": 32, "depth": 1, "heads": 2, "dropout": 0.0},
        steps=150,
        batch_size=64,
        learning_rate=3e-3,
        feature_dropout=0.0,
        eval_every=50,
    )
    trained = train_decoder(
        features[:200], coordinates[:200], features[200:], coordinates[200:], config, log=lambda _: None
    )
    assert trained.val.accuracy_at(1) > 0.95 and len(trained.history) == 3
    assert trained.best_step == max(trained.history, key=lambda h: h[1])[0]

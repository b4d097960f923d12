"""Token decoding strategies: latency per photo and val accuracy for greedy, beam 5 and 30 samples.

With the shipped decoder, measured in one run:
- latency: one photo's decode as the service runs it (decode, then the distinct cells with their
  centres and sizes), per val photo; median and 90th percentile, and the median's ratio to greedy;
- the KV cache's worth: greedy that re-runs the whole prefix at every step (the cache's absence),
  timed on the same photos, as a ratio to greedy with the cache;
- accuracy on the whole Im2GPS3k val split (360 photos): the most probable cell's centre as the one
  guess, with the prior baseline (the train split's densest place) as the floor; to level 20 (cells
  of about 10 m) and to level 8 (about 40 km).

    .venv/bin/python bench/tokens_strategies.py [--photos 360]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from geoloc.common.paths import data_root
from geoloc.evaluation.dataset import load_split
from geoloc.evaluation.metrics import summarize
from geoloc.evaluation.prior import PriorPredictions
from geoloc.geo.sphere import haversine_km
from geoloc.tokens.cells import decode_photo, distinct_cells
from geoloc.tokens.config import TokensSettings
from geoloc.tokens.decoder import TOKEN_COUNT
from geoloc.tokens.model import load_token_model
from geoloc.tokens.search import Decoded
from geoloc.training.expert_outputs import gallery_neighbours
from geoloc.training.features import split_features

STRATEGIES = {
    "greedy": ("greedy", {}),
    "beam 5": ("beam", {"beam_width": 5}),
    "sample 30 at 0.7": ("sample", {"n_samples": 30, "temperature": 0.7}),
    # Coarser cells: the fine digits' confidence no longer decides which beam leads.
    "greedy to level 8": ("greedy", {"level": 8}),
    "beam 5 to level 8": ("beam", {"beam_width": 5, "level": 8}),
}


@torch.no_grad()
def greedy_without_cache(model, feature: np.ndarray) -> list:
    """Greedy decoding that runs the full teacher-forced pass over the prefix at every step."""
    condition = model.standardiser(feature[None])
    tokens = torch.zeros(1, TOKEN_COUNT, dtype=torch.long)
    total = torch.zeros(1)
    for position in range(TOKEN_COUNT):
        log_probs = model.decoder(condition, tokens)[:, position]
        best, tokens[:, position] = log_probs.max(dim=1)
        total += best
    return distinct_cells(Decoded(tokens, total), 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=360, help="val photos (default: %(default)s, the whole split)")
    args = parser.parse_args()
    data = data_root() / "im2gps3k"
    train, val = load_split(data / "train"), load_split(data / "val")
    features = split_features(val, progress=False)[: args.photos]
    places = np.array([(i.lat, i.lon) for i in val.images])[: args.photos]
    model = load_token_model(TokensSettings().checkpoint)
    prior = PriorPredictions(train)
    floor = summarize(haversine_km(places[:, 0], places[:, 1], prior.lat, prior.lon))
    cases = {name: (strategy, options, None) for name, (strategy, options) in STRATEGIES.items()}
    if model.neighbour_slots:
        neighbours = gallery_neighbours(features, model.neighbour_slots)
        cases.update(
            {
                f"{name}, gallery neighbours": (strategy, options, neighbours)
                for name, (strategy, options) in STRATEGIES.items()
            }
        )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; decoder {model.version}; "
        f"Im2GPS3k val, {len(places)} of {len(val)} photos"
    )
    print(f"prior baseline on the same photos: GeoScore {floor.geoscore:.1f}, median {floor.median_km:.0f} km\n")
    print(
        "| strategy | median ms/photo | p90 ms | ratio to greedy | GeoScore | median km | 25 / 200 / 750 / 2500 km % |"
    )
    print("|---|---|---|---|---|---|---|")
    greedy_ms = None
    for name, (strategy, options, neighbours) in cases.items():
        generator, times, guesses = torch.Generator().manual_seed(0), [], []
        for row, feature in enumerate(features):
            given = None if neighbours is None else neighbours.rows(torch.tensor([row]))
            started = time.perf_counter()
            cells = decode_photo(model, feature, strategy, neighbours=given, generator=generator, **options)
            times.append(1000 * (time.perf_counter() - started))
            guesses.append((cells[0].lat_deg, cells[0].lon_deg))
        guesses = np.array(guesses)
        metrics = summarize(haversine_km(places[:, 0], places[:, 1], guesses[:, 0], guesses[:, 1]))
        median = float(np.median(times))
        greedy_ms = greedy_ms or median
        shares = " / ".join(f"{100 * metrics.accuracy_at(t):.1f}" for t in (25, 200, 750, 2500))
        print(
            f"| {name} | {median:.2f} | {np.percentile(times, 90):.2f} | {median / greedy_ms:.2f} | "
            f"{metrics.geoscore:.1f} | {metrics.median_km:.0f} | {shares} |"
        )
    times, same = [], 0
    for feature in features:
        started = time.perf_counter()
        uncached = greedy_without_cache(model, feature)
        times.append(1000 * (time.perf_counter() - started))
        same += uncached[0].cell_id == decode_photo(model, feature, "greedy")[0].cell_id
    print(
        f"| greedy, no KV cache (re-runs the prefix) | {np.median(times):.2f} | {np.percentile(times, 90):.2f} | "
        f"{np.median(times) / greedy_ms:.2f} | same cell as greedy for {same} of {len(features)} photos | | |"
    )


if __name__ == "__main__":
    main()

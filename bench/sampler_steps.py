"""Sampler step counts: samples per second and val accuracy at 8, 16, 32, 64 and 250 steps.

For each shipped method (flow matching, SH diffusion) and each step count, measured in one run:
- samples/s: one photo's request as the service runs it (n samples at the checkpoint's guidance,
  then the kernel summary), median of 3, and its ratio to the same method at 8 steps;
- accuracy on a fixed random subset of the Im2GPS3k val split (seed 0): the top mode of each photo's
  samples as its one guess, with the prior baseline (the train split's densest place) on the
  same photos as the floor. 250 steps over the full split takes long on 2 cores, hence --photos.

    .venv/bin/python bench/sampler_steps.py [--photos 120] [--samples 32] [--rate-samples 256]
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
from geoloc.sampler.config import SamplerSettings
from geoloc.sampler.density import summarize_samples
from geoloc.sampler.model import load_sampler
from geoloc.training.features import split_features
from geoloc.training.sampler import val_metrics

STEPS = (8, 16, 32, 64, 250)


def samples_per_second(sampler, feature: np.ndarray, n: int, steps: int, repeats: int = 3) -> float:
    times = []
    for seed in range(repeats):
        started = time.perf_counter()
        xyz = sampler.sample_places(
            feature[None], n, steps, sampler.default_guidance, torch.Generator().manual_seed(seed)
        )
        summarize_samples(xyz[0])
        times.append(time.perf_counter() - started)
    return n / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=120, help="val photos scored (default: %(default)s of 360)")
    parser.add_argument("--samples", type=int, default=32, help="samples per photo when scoring (default: %(default)s)")
    parser.add_argument("--rate-samples", type=int, default=256, help="samples per request when timing")
    args = parser.parse_args()
    data = data_root() / "im2gps3k"
    train, val = load_split(data / "train"), load_split(data / "val")
    chosen = np.sort(np.random.default_rng(0).permutation(len(val))[: args.photos])  # a fixed, unbiased subset
    features = split_features(val, progress=False)[chosen]
    places = np.array([(i.lat, i.lon) for i in val.images])[chosen]
    prior = PriorPredictions(train)
    floor = summarize(haversine_km(places[:, 0], places[:, 1], prior.lat, prior.lon))
    settings = SamplerSettings()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"Im2GPS3k val, {len(places)} of {len(val)} photos "
        f"(random, seed 0); "
        f"{args.samples} samples per photo when scoring, {args.rate_samples} per request when timing"
    )
    print(
        f"prior baseline on these photos: GeoScore {floor.geoscore:.0f}, median {floor.median_km:.0f} km, "
        f"750 km {floor.accuracy_at(750):.1%}, 2500 km {floor.accuracy_at(2500):.1%}"
    )
    print(
        f"\n{'method':<6} {'steps':>5} {'samples/s':>10} {'x 8 steps':>9} {'GeoScore':>9} {'median km':>10} "
        f"{'25 km':>6} {'200 km':>7} {'750 km':>7} {'2500 km':>8}"
    )
    for method, path in (("flow", settings.flow_checkpoint), ("sh", settings.sh_checkpoint)):
        sampler = load_sampler(path)
        base = None
        for steps in STEPS:
            rate = samples_per_second(sampler, features[0], args.rate_samples, steps)
            base = base or rate
            m = val_metrics(sampler, features, places, args.samples, steps, sampler.default_guidance)
            print(
                f"{method:<6} {steps:>5} {rate:>10.0f} {rate / base:>9.2f} {m.geoscore:>9.0f} {m.median_km:>10.0f} "
                f"{m.accuracy_at(25):>6.1%} {m.accuracy_at(200):>7.1%} {m.accuracy_at(750):>7.1%} "
                f"{m.accuracy_at(2500):>8.1%}",
                flush=True,
            )


if __name__ == "__main__":
    main()

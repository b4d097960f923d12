"""What training each expert costs per photo, against reading its minibatches from a memory map.

For the flow sampler, the SH sampler and the token decoder at their shipped training configurations
(training/out_of_fold.fold_configs: network, batch size, learning rate), and the gallery head at its
shipped configuration over the default 100K gallery, on seeded synthetic features of CLIP ViT-L/14's
width (768), in one process on this machine, measured in one run:
- seconds per optimiser step: two runs of each trainer, at --steps and at twice that, each ending
  with one evaluation on --val photos; the difference over the extra steps is what a step costs
  (the gallery head: two runs of 1 and 2 epochs over --photos photos, per photo seen);
- the floor: reading one minibatch's rows at random from a memory-mapped float16 features file of
  --mapped photos (training/mapped_features.feature_rows), as every trainer reads a features
  folder; the ratio says whether training is bound by its compute or by the features' reads;
- one epoch of MP-16's 4.7 M photos: photos / batch size x seconds per step, one process on this
  machine, under the stated assumption that a step's cost does not depend on the set's size.

    .venv/bin/python bench/training_steps.py [--steps 20] [--photos 2048] [--mapped 200000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geoloc.training.mapped_features import feature_rows

WIDTH = 768
MP16_PHOTOS = 4_700_000


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(0.0, 1.0, size=(n, WIDTH)).astype(np.float32)
    places = np.stack([rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)], axis=1)
    return features, places


def seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def per_step(train, steps: int) -> float:
    """Seconds per optimiser step: train(steps) and train(2 x steps) differ by `steps` steps alone."""
    return (seconds(lambda: train(2 * steps)) - seconds(lambda: train(steps))) / steps


def mapped_features_file(folder: Path, mapped: int) -> np.ndarray:
    """A read-only float16 memory map [mapped, WIDTH] of seeded features, written in chunks."""
    path = folder / "features.npy"
    written = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(mapped, WIDTH))
    for start in range(0, mapped, 65536):
        rows = min(65536, mapped - start)
        written[start : start + rows] = np.random.default_rng(start).normal(size=(rows, WIDTH))
    written.flush()
    del written
    return np.load(path, mmap_mode="r")


def mapped_read_s(features: np.ndarray, batch: int, repeats: int = 50) -> float:
    """Median seconds to read `batch` random rows of a memory map, as a trainer reads a minibatch."""
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        rows = rng.integers(0, len(features), batch)
        started = time.perf_counter()
        feature_rows(features, rows)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps of the shorter run")
    parser.add_argument("--photos", type=int, default=2048, help="training photos (the gallery head's epoch)")
    parser.add_argument("--val", type=int, default=16, help="photos each run's one evaluation scores")
    parser.add_argument("--mapped", type=int, default=200_000, help="photos in the memory-mapped floor's file")
    args = parser.parse_args()

    from dataclasses import replace

    from geoloc.gallery.location_encoder import LocationEncoder
    from geoloc.gallery.retrieval import loaded_gallery
    from geoloc.training.gallery_head import train_head
    from geoloc.training.out_of_fold import FoldBudget, fold_configs
    from geoloc.training.sampler import train_sampler
    from geoloc.training.token_decoder import train_decoder

    features, places = synthetic(args.photos, 0)
    val = synthetic(args.val, 1)
    configs = fold_configs(FoldBudget())
    quiet = lambda *_: None

    def sampler(config):
        return lambda steps: train_sampler(
            features, places, *val, replace(config, steps=steps, eval_every=steps), "bench", log=quiet
        )

    def decoder(steps):
        tokens = replace(configs["tokens"], steps=steps, eval_every=steps)
        return train_decoder(features, places, *val, tokens, log=quiet)

    folder = tempfile.TemporaryDirectory()
    mapped = mapped_features_file(Path(folder.name), args.mapped)
    rows = []
    for name, config, train in (
        ("flow sampler", configs["flow"], sampler(configs["flow"])),
        ("SH sampler", configs["sh"], sampler(configs["sh"])),
        ("token decoder", configs["tokens"], decoder),
    ):
        step_s = per_step(train, args.steps)
        rows.append((name, config.batch_size, step_s, mapped_read_s(mapped, config.batch_size)))

    gallery, encoder = loaded_gallery(), LocationEncoder.pretrained()
    vectors, coordinates = gallery.vectors(), gallery.coordinates
    head = configs["gallery"]

    def head_epochs(epochs: int) -> None:
        train_head(features, places, *val, vectors, coordinates, encoder, replace(head, epochs=epochs), log=quiet)

    per_photo = (seconds(lambda: head_epochs(2)) - seconds(lambda: head_epochs(1))) / args.photos
    step_s = per_photo * head.batch_size
    rows.append(("gallery head", head.batch_size, step_s, mapped_read_s(mapped, head.batch_size)))

    del mapped
    folder.cleanup()
    print(f"{WIDTH}-d synthetic features, {args.photos} photos, one process, {torch.get_num_threads()} threads\n")
    print(
        "| expert | batch | s / step | floor: read its batch from a map of "
        f"{args.mapped:,} | step / floor | one MP-16 epoch (4.7 M photos) |"
    )
    print("|---|---|---|---|---|---|")
    for name, batch, step_s, read_s in rows:
        epoch_h = MP16_PHOTOS / batch * step_s / 3600
        ratio = step_s / read_s
        cells = [name, str(batch), f"{step_s:.3f}", f"{1000 * read_s:.2f} ms", f"{ratio:.0f}x", f"{epoch_h:.1f} h"]
        print(f"| {' | '.join(cells)} |")


if __name__ == "__main__":
    main()

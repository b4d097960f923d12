"""Photos per second per worker through the feature pipeline against the in-process floor.

One run writes the first --photos Im2GPS3k val photos (labels order) as WebDataset shards of
--photos-per-shard photos (`write_shards`), then measures, one mode at a time, on those shards:
- floor: the embedding service's decode + crop (`model_input_from_photo`) and the model's
  backbone.py network forward, in-process at batch 1 (the baseline, as in
  embedding_throughput.py), and at batch 16 (the pipeline's batch) for reference;
- pipeline, 1 worker, in-process backbone: `run_worker` with `InProcessFeatures`, called here;
- pipeline, 2 local workers, in-process: `geoloc features --workers 2` as a subprocess;
- pipeline, 1 worker through Triton: `run_worker` with `TritonFeatures`, against one Triton
  started for the run; and 2 workers through Triton, `geoloc features --workers 2 --triton-url`.
Each pipeline pass writes into a fresh features folder (shard reading, tar parsing and .npz
writing included). The CLI rows include process start-up: Python and torch imports, loading
the network and hashing its weights for the manifest, in each worker; the in-process rows load
the backbone once, outside the timing.
Figures are the median of --passes passes after one warm-up pass; per worker is total / workers,
and the ratio is per worker against the floor (decode + crop + forward at batch 1) of this run.
Torch threads are left at their defaults, except that `geoloc features --workers N` gives each
worker OMP_NUM_THREADS = cores / N. Everything shares this machine's cores (Triton included),
so two workers on a small box compete for the same cores: compare ratios, not times.

    .venv/bin/python bench/feature_pipeline.py [--photos 96] [--photos-per-shard 24] [--passes 3]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from geoloc.common.logs import configure_logging
from geoloc.common.paths import data_root
from geoloc.common.ports import free_port
from geoloc.embedding.config import EmbeddingSettings
from geoloc.embedding.model_config import (
    DEFAULT_MODEL_REPOSITORY,
    load_backbone_module,
    model_parameters,
    read_model_config,
)
from geoloc.embedding.preprocessing import CropSpec, model_input_from_photo
from geoloc.evaluation.dataset import IMAGES_DIR, LABELS_FILE
from geoloc.training.feature_shards import BATCH, InProcessFeatures, TritonFeatures, run_worker
from geoloc.training.features_cli import DEFAULT_MODEL
from geoloc.training.shards import photo_shards, write_shards
from geoloc.tritonserver.launcher import TritonLaunch, TritonServer

MODEL = DEFAULT_MODEL
FLOOR = "floor: in-process decode+crop+forward, batch 1"


def timed(fn: Callable[[], object], photos: int, passes: int) -> float:
    """Median photos/s over `passes` passes, after one warm-up pass."""
    fn()
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        fn()
        rates.append(photos / (time.perf_counter() - started))
    return statistics.median(rates)


def sub_split(source: Path, destination: Path, photos: int) -> int:
    """A split folder of `source`'s first `photos` labelled photos (images symlinked); returns how many."""
    with open(source / LABELS_FILE, newline="") as stream:
        rows = list(csv.reader(stream))
    header, rows = rows[0], rows[1 : photos + 1]
    (destination / IMAGES_DIR).mkdir(parents=True)
    with open(destination / LABELS_FILE, "w", newline="") as stream:
        csv.writer(stream).writerows([header, *rows])
    column = header.index("image")
    for row in rows:
        (destination / IMAGES_DIR / row[column]).symlink_to((source / IMAGES_DIR / row[column]).resolve())
    return len(rows)


def measure_floor(photos: list[bytes], passes: int) -> dict[str, float]:
    config = read_model_config(MODEL)
    crop_spec = CropSpec.from_model_config(config)
    limits = EmbeddingSettings().photo_limits()
    network = (
        load_backbone_module(MODEL)
        .network_from_parameters(model_parameters(config), str(DEFAULT_MODEL_REPOSITORY / MODEL))
        .eval()
    )

    def crop(data: bytes) -> np.ndarray:
        return model_input_from_photo(data, limits, crop_spec)

    @torch.inference_mode()
    def batches(size: int) -> None:
        for i in range(0, len(photos), size):
            network(torch.from_numpy(np.stack([crop(p) for p in photos[i : i + size]])))

    return {
        FLOOR: timed(lambda: batches(1), len(photos), passes),
        f"in-process decode+crop+forward, batch {BATCH}": timed(lambda: batches(BATCH), len(photos), passes),
    }


class FreshFolders:
    """A new, empty features folder for every pass."""

    def __init__(self, root: Path, name: str):
        self.root, self.name, self.count = root, name, 0

    def __call__(self) -> Path:
        self.count += 1
        return self.root / f"{self.name}-{self.count}"


def in_process_worker(shards, backbone, folders: FreshFolders, expected: int) -> Callable[[], None]:
    def run() -> None:
        out = folders()
        out.mkdir(parents=True)
        counts = run_worker(shards, out, backbone)
        if counts["photos"] + counts["failed"] != expected:
            raise RuntimeError(f"run_worker saw {counts['photos'] + counts['failed']} photos, expected {expected}")

    return run


def cli_workers(shards_dir: Path, folders: FreshFolders, workers: int, shard_count: int, *extra: str):
    def run() -> None:
        out = folders()
        command = [sys.executable, "-m", "geoloc.cli", "features", "--input", str(shards_dir), "--out", str(out)]
        command += ["--model", MODEL, "--workers", str(workers), *extra]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or len(list(out.glob("*.npz"))) != shard_count:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=96, help="val photos per measurement (default: %(default)s)")
    parser.add_argument("--photos-per-shard", type=int, default=24, help="(default: %(default)s)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per mode (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=None, help="data root holding im2gps3k/")
    args = parser.parse_args()
    configure_logging("warning", "console")
    val = (args.data or data_root()) / "im2gps3k" / "val"
    load_before = os.getloadavg()[0]  # 1-minute: anything else running skews every row, the floor most

    # rows: mode -> (total photos/s, workers)
    rows: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="geoloc-bench-features-") as temp:
        temp = Path(temp)
        n = sub_split(val, temp / "val", args.photos)
        written = write_shards(temp / "val", temp / "shards", args.photos_per_shard)
        shards = photo_shards(temp / "shards")
        photos = [sample.photo for shard in shards for sample in shard.samples()]
        threads = torch.get_num_threads()

        for mode, rate in measure_floor(photos, args.passes).items():
            rows[mode] = (rate, 1)

        with contextlib.redirect_stderr(io.StringIO()):  # run_worker's per-shard progress lines
            backbone = InProcessFeatures(MODEL)
            run = in_process_worker(shards, backbone, FreshFolders(temp, "inproc-1"), n)
            rows["pipeline, 1 worker, in-process (run_worker)"] = (timed(run, n, args.passes), 1)
            run = cli_workers(temp / "shards", FreshFolders(temp, "inproc-2"), 2, len(written))
            rows["pipeline, 2 workers, in-process (CLI)"] = (timed(run, n, args.passes), 2)

            with TritonServer(TritonLaunch(grpc_port=free_port(), metrics_port=None)) as triton:
                backbone = TritonFeatures(triton.grpc_url, MODEL)
                try:
                    run = in_process_worker(shards, backbone, FreshFolders(temp, "triton-1"), n)
                    rows["pipeline, 1 worker, Triton (run_worker)"] = (timed(run, n, args.passes), 1)
                finally:
                    backbone.close()
                folders = FreshFolders(temp, "triton-2")
                run = cli_workers(temp / "shards", folders, 2, len(written), "--triton-url", triton.grpc_url)
                rows["pipeline, 2 workers, Triton (CLI)"] = (timed(run, n, args.passes), 2)

    floor = rows[FLOOR][0]
    print(
        f"\n{n} Im2GPS3k val photos in {len(written)} shards of {args.photos_per_shard}; "
        f"{os.cpu_count()} cores, torch threads: {threads}; median of {args.passes} passes; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"{'mode':<52} {'photos/s':>9} {'per worker':>11} {'x floor':>8}")
    for mode, (rate, workers) in rows.items():
        print(f"{mode:<52} {rate:>9.1f} {rate / workers:>11.1f} {rate / workers / floor:>8.2f}")


if __name__ == "__main__":
    main()

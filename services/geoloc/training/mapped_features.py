"""A features folder as one memory-mapped array, and reading it the way the trainers do: by minibatch.

Training on MP-16's 4.7 M photos would hold 14 GB of float32 features if a features folder were
read whole. `mapped_features` joins the folder's float16 shards, one at a time, into one .npy file
under the cache (named by a hash of the manifest and each shard's size and time, written under a
temporary name and renamed, so a run cut short leaves no file that looks whole) and maps it
read-only: the operating system pages in what a minibatch reads. The trainers then take only
`feature_moments` (per-dimension mean and spread) of the whole set, by chunks, and the rows of
each minibatch (`feature_rows`).

An array in memory (the Im2GPS3k splits' cached features) goes through the same two functions, and
the moments are then torch's own reduction of the whole array, as the shipped models were trained:
the same weights, bit for bit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from geoloc.artifacts.files import written_atomically

CHUNK_ROWS = 1 << 16  # rows read at once when reducing a mapped array: 100 MB of 768-d float16


def mapped_features(folder: Path, shard_paths: list[Path], dimension: int, cache_dir: Path) -> np.memmap:
    """The features of `shard_paths` (a features folder's shards, in order) as one read-only float16
    memory map [n, dimension], joined into `cache_dir` once."""
    signature = hashlib.sha256((Path(folder) / "manifest.json").read_bytes())
    for path in shard_paths:
        stat = path.stat()
        signature.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = Path(cache_dir) / f"features-{signature.hexdigest()[:16]}.npy"
    if not target.exists():
        counts = []
        for path in shard_paths:
            with np.load(path) as stored:
                counts.append(len(stored["keys"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(target) as stream:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False}
            np.lib.format.write_array_header_1_0(stream, {**header, "shape": (sum(counts), dimension)})
            for path in shard_paths:  # one shard in memory at a time
                with np.load(path) as stored:
                    stream.write(np.ascontiguousarray(stored["features"], dtype=np.float16).tobytes())
    return np.load(target, mmap_mode="r")


def feature_rows(features: np.ndarray, rows: torch.Tensor | np.ndarray) -> np.ndarray:
    """The float32 rows [len(rows), d] of features [n, d] (in memory or mapped), in the order asked."""
    index = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    return np.asarray(features[index], dtype=np.float32)


def feature_moments(features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and (unbiased) standard deviation of features [n, d] as float32 tensors.

    In memory: torch's reduction of the whole float32 array. Mapped: by chunks of CHUNK_ROWS in
    float64, each chunk's mean and squared deviations merged into the running ones (Chan et al.'s
    pairwise update), so the set is never in memory whole and large means lose no precision."""
    if not isinstance(features, np.memmap):
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        return x.mean(0), x.std(0)
    count, mean, squares = 0, np.zeros(features.shape[1]), np.zeros(features.shape[1])
    for start in range(0, len(features), CHUNK_ROWS):
        block = np.asarray(features[start : start + CHUNK_ROWS], dtype=np.float64)
        block_mean = block.mean(0)
        block_squares = ((block - block_mean) ** 2).sum(0)
        total = count + len(block)
        delta = block_mean - mean
        mean = mean + delta * len(block) / total
        squares = squares + block_squares + delta**2 * count * len(block) / total
        count = total
    std = np.sqrt(squares / max(count - 1, 1))
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

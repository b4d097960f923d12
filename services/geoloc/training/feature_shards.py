"""The serving backbone's features over photo shards: one feature shard per photo shard, resumable.

Each photo goes through `model_input_from_photo`, the embedding service's own decode and crop,
and then through the backbone: the Triton model the embedding service serves (`TritonFeatures`,
tritonclient's gRPC API, the service's `TritonBackbone`), or, where no Triton runs, the same
model's `backbone.py` in-process (`InProcessFeatures`), which the model-repository tests hold
equal to Triton's output. Training features are then the serving features by construction.

A feature shard `<shard>.npz` holds `keys`, `features` (float16 [n, d]), `lat`, `lon`,
`author`, and the photos that could not be used: `failed_keys` and `failed_reasons`. It is
written under a temporary name and renamed, so a shard's file exists only once it is whole:
a worker skips shards whose file exists, and a killed worker's shard is simply redone. Photos
are batched in a fixed order within their shard, so a redone shard is bit-identical.

`manifest.json` beside them names the backbone, the model, its version, the preprocessing and
the model's sha256; a folder refuses features of another backbone or input.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from geoloc.artifacts.files import written_atomically
from geoloc.common.errors import InvalidArgument
from geoloc.common.photos import PhotoLimits
from geoloc.common.tls import ClientTls
from geoloc.embedding.config import EmbeddingSettings
from geoloc.embedding.model_config import (
    DEFAULT_MODEL_REPOSITORY,
    load_backbone_module,
    model_parameters,
    read_model_config,
)
from geoloc.embedding.preprocessing import declared_preprocessing, model_input_from_photo
from geoloc.embedding.triton_backbone import BackboneInfo, TritonBackbone, describe_backbone
from geoloc.evaluation.csvio import InputError
from geoloc.training.shards import PhotoShard

MANIFEST = "manifest.json"
FORMAT = "geoloc-features/1"
BATCH = 16
FAILED_LIST = "failed.csv"


class InProcessFeatures:
    """The model repository's `backbone.py` network, on this process's CPU or GPU."""

    def __init__(self, model: str, repository: Path = DEFAULT_MODEL_REPOSITORY, device: str = "cpu"):
        config = read_model_config(model, repository)
        self.config = config
        self.info: BackboneInfo = describe_backbone(config)
        self.version = "1"
        self.computed_by = f"in-process ({device})"
        self.device = torch.device(device)
        module = load_backbone_module(model, repository)
        self.network = module.network_from_parameters(model_parameters(config), str(Path(repository) / model))
        self.network.to(self.device).eval()

    @torch.inference_mode()
    def features(self, crops: np.ndarray) -> np.ndarray:
        return self.network(torch.from_numpy(crops).to(self.device)).float().cpu().numpy()

    def close(self) -> None:
        pass


class TritonFeatures:
    """The backbone on a running Triton, through the embedding service's own client."""

    def __init__(self, url: str, model: str, timeout_s: float = 300.0, tls: ClientTls | None = None):
        self._loop = asyncio.new_event_loop()
        self._backbone = self._loop.run_until_complete(TritonBackbone.connect(url, model, tls=tls))
        self.info: BackboneInfo = self._backbone.info
        self.config = self._loop.run_until_complete(self._backbone.model_config())
        self.version = ""
        self.computed_by = f"triton at {url}"
        self._timeout_s = timeout_s

    def features(self, crops: np.ndarray) -> np.ndarray:
        features, self.version = self._loop.run_until_complete(self._backbone.embed(crops, self._timeout_s))
        return features

    def close(self) -> None:
        self._loop.run_until_complete(self._backbone.close())
        self._loop.close()


@dataclass
class FeatureShard:
    keys: np.ndarray  # str [n]
    features: np.ndarray  # float16 [n, d]
    lat: np.ndarray  # float64 [n]
    lon: np.ndarray
    author: np.ndarray  # str [n], "" where unknown
    failed_keys: np.ndarray  # str [m]
    failed_reasons: np.ndarray  # str [m]


def shard_features(shard: PhotoShard, backbone, limits: PhotoLimits, batch: int = BATCH) -> FeatureShard:
    """Features of every usable photo of `shard`; the others listed with why."""
    keys, lat, lon, author, chunks, crops = [], [], [], [], [], []
    failed_keys, failed_reasons = [], []
    for sample in shard.samples():
        problem = sample.problem
        if problem is None:
            try:
                crops.append(model_input_from_photo(sample.photo, limits, backbone.info.crop, sample.key))
            except InvalidArgument as exc:
                problem = str(exc)
        if problem is not None:
            failed_keys.append(sample.key)
            failed_reasons.append(problem)
            continue
        keys.append(sample.key)
        lat.append(sample.lat)
        lon.append(sample.lon)
        author.append(sample.author)
        if len(crops) == batch:
            chunks.append(backbone.features(np.stack(crops)).astype(np.float16))
            crops = []
    if crops:
        chunks.append(backbone.features(np.stack(crops)).astype(np.float16))
    dimension = backbone.info.dimension
    return FeatureShard(
        keys=np.asarray(keys, dtype=str),
        features=np.concatenate(chunks) if chunks else np.zeros((0, dimension), np.float16),
        lat=np.asarray(lat, dtype=np.float64),
        lon=np.asarray(lon, dtype=np.float64),
        author=np.asarray(author, dtype=str),
        failed_keys=np.asarray(failed_keys, dtype=str),
        failed_reasons=np.asarray(failed_reasons, dtype=str),
    )


def feature_shard_path(out_dir: Path, shard: PhotoShard) -> Path:
    return Path(out_dir) / f"{shard.name}.npz"


def write_feature_shard(path: Path, shard: FeatureShard) -> None:
    with written_atomically(path) as stream:
        np.savez(stream, **asdict(shard))


def read_feature_shard(path: Path) -> FeatureShard:
    with np.load(path) as stored:
        return FeatureShard(**{name: stored[name] for name in FeatureShard.__dataclass_fields__})


def features_manifest(backbone, model_sha256: str, shards: list[PhotoShard], source: Path) -> dict:
    """What the features in a folder are: whose, from what, made how. `computed_by` is recorded but
    not compared, so Triton and in-process workers may share a folder."""
    info: BackboneInfo = backbone.info
    return {
        "format": FORMAT,
        "backbone": info.name,
        "model": info.model_name,
        "dimension": info.dimension,
        "l2_normalized": info.l2_normalized,
        "preprocessing": declared_preprocessing(backbone.config),
        "model_sha256": model_sha256,
        "source": str(source),
        "shards": [shard.name for shard in shards],
        "computed_by": backbone.computed_by,
    }


def model_sha256(model: str, repository: Path = DEFAULT_MODEL_REPOSITORY) -> str:
    """sha256 of a model as this checkout has it: its config, its code and its weights (the
    network's parameters by name, so the same weights hash the same wherever they are stored)."""
    folder = Path(repository) / model
    digest = hashlib.sha256()
    for path in sorted([folder / "config.pbtxt", *(folder / "1").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    config = read_model_config(model, repository)
    network = load_backbone_module(model, repository).network_from_parameters(model_parameters(config), str(folder))
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode() + b"\0" + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def claim_folder(out_dir: Path, manifest: dict) -> None:
    """Write the manifest, or check that the one there describes the same features."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST
    if path.exists():
        existing = json.loads(path.read_text())
        differing = sorted(k for k in manifest if k != "computed_by" and existing.get(k) != manifest[k])
        if differing:
            raise InputError(
                f"{out_dir} holds features made otherwise ({', '.join(differing)} differ from this run's): "
                "use another --out folder"
            )
        return
    with written_atomically(path) as stream:
        stream.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def my_shards(shards: list[PhotoShard], worker_index: int, worker_count: int) -> list[PhotoShard]:
    """The shards worker `worker_index` of `worker_count` takes: every count-th, from its index."""
    if worker_count < 1 or not 0 <= worker_index < worker_count:
        raise InputError(f"worker index must be in 0..{worker_count - 1} of {worker_count} workers, got {worker_index}")
    return shards[worker_index::worker_count]


def run_worker(
    shards: list[PhotoShard], out_dir: Path, backbone, worker_index: int = 0, worker_count: int = 1, batch: int = BATCH
) -> dict:
    """Compute this worker's shards that are not done yet; returns counts. Progress goes to stderr."""
    limits = EmbeddingSettings().photo_limits()
    mine = my_shards(shards, worker_index, worker_count)
    counts = {"shards": len(mine), "skipped": 0, "done": 0, "photos": 0, "failed": 0}
    for shard in mine:
        path = feature_shard_path(out_dir, shard)
        for cut_short in out_dir.glob(f".{path.name}.partial-*"):  # a killed worker's; only this one writes it now
            cut_short.unlink(missing_ok=True)
        if path.exists():
            counts["skipped"] += 1
            continue
        started = time.perf_counter()
        result = shard_features(shard, backbone, limits, batch)
        write_feature_shard(path, result)
        seconds = time.perf_counter() - started
        counts["done"] += 1
        counts["photos"] += len(result.keys)
        counts["failed"] += len(result.failed_keys)
        finished = counts["done"] + counts["skipped"]
        print(
            f"worker {worker_index}/{worker_count}: {shard.name} done ({finished}/{len(mine)} shards): "
            f"{len(result.keys)} photos, {len(result.failed_keys)} failed, "
            f"{(len(result.keys) + len(result.failed_keys)) / seconds:.1f} photos/s",
            file=sys.stderr,
            flush=True,
        )
    return counts


def summarise_folder(out_dir: Path) -> dict:
    """Over a features folder: shards done and missing, photos, and every failed photo listed in
    failed.csv (shard,key,reason)."""
    manifest = json.loads((out_dir / MANIFEST).read_text())
    done, missing, photos, failed = [], [], 0, []
    for name in manifest["shards"]:
        path = out_dir / f"{name}.npz"
        if not path.exists():
            missing.append(name)
            continue
        done.append(name)
        shard = read_feature_shard(path)
        photos += len(shard.keys)
        failed += [(name, k, r) for k, r in zip(shard.failed_keys, shard.failed_reasons, strict=True)]
    with open(out_dir / FAILED_LIST, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["shard", "key", "reason"])
        writer.writerows(failed)
    return {"done": len(done), "missing": missing, "photos": photos, "failed": len(failed)}


@dataclass
class FeatureSet:
    """A features folder's photos, in its shards' order, ready to train on."""

    keys: np.ndarray  # str [n]
    features: np.ndarray  # float32 [n, d], or a float16 memory map [n, d]
    places: np.ndarray  # float64 [n, 2] lat, lon
    authors: np.ndarray  # str [n]
    manifest: dict

    @property
    def backbone(self) -> str:
        return self.manifest["backbone"]


def load_feature_set(folder: Path, mapped_in: Path | None = None) -> FeatureSet:
    """Every feature shard of `folder`, in order, read shard by shard (float16) and joined as float32;
    with `mapped_in` (a cache folder), joined there once and memory-mapped as float16 instead
    (training/mapped_features.py), so that only the keys, places and photographers are in memory.
    Refuses a folder whose shards are not all done (a run still going, or a worker that failed)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise InputError(f"{folder}: not a features folder (no {MANIFEST}; `geoloc features` writes one)")
    manifest = json.loads((folder / MANIFEST).read_text())
    paths = [folder / f"{name}.npz" for name in manifest["shards"]]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise InputError(
            f"{folder}: {len(missing)} of {len(paths)} feature shards are not done ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): run `geoloc features` again to finish them"
        )
    dimension = int(manifest["dimension"])
    columns: dict[str, list[np.ndarray]] = {"keys": [], "lat": [], "lon": [], "author": [], "features": []}
    for path in paths:
        with np.load(path) as stored:  # an .npz reads each array only when asked for it
            for name in columns:
                if name != "features" or mapped_in is None:
                    columns[name].append(stored[name])
    if mapped_in is None:
        features = np.concatenate([f.reshape(-1, dimension) for f in columns["features"]]).astype(np.float32)
    else:
        from geoloc.training.mapped_features import mapped_features

        features = mapped_features(folder, paths, dimension, mapped_in)
    return FeatureSet(
        keys=np.concatenate(columns["keys"]),
        features=features,
        places=np.stack([np.concatenate(columns["lat"]), np.concatenate(columns["lon"])], axis=1),
        authors=np.concatenate(columns["author"]),
        manifest=manifest,
    )

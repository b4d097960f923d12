"""Geotagged photos in shards, read by streaming: WebDataset tar shards, or a split folder cut into shards.

A WebDataset shard is a plain tar whose members are grouped by key: `<key>.jpg` (or .jpeg,
.png, .webp) with the photo's bytes, and `<key>.json` with at least `lat` and `lon` (and here
also `image`, the photo's original name, and `author` where known). Members of one sample are
adjacent, so a shard is read front to back with constant memory: the format PLONK and its peers
train on, and what `write_shards` writes from a split folder.

A split folder (`images/` + `labels.csv`) is read as shards too, of `photos_per_shard` photos in
labels order, so every later stage (features, training) has one unit of work and one reader for
both inputs. A sample that cannot be used (no photo, no label, a label off the globe) is still
yielded, with `problem` saying why: over millions of photos a bad sample is counted and listed
by the stage that reads it, never the end of the run.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from geoloc.artifacts.files import written_atomically
from geoloc.evaluation.csvio import InputError
from geoloc.evaluation.dataset import LABELS_FILE, Split, load_split

PHOTO_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTENSION = "json"
SHARD_SUFFIX = ".tar"
PHOTOS_PER_SHARD = 1000


@dataclass(frozen=True)
class Sample:
    key: str
    photo: bytes | None
    lat: float
    lon: float
    author: str
    problem: str | None = None  # why this sample cannot be used; None when it can


@dataclass(frozen=True)
class PhotoShard:
    """One unit of work: a tar file, or a slice of a split folder's photos."""

    name: str
    source: Path
    split: Split | None = None
    start: int = 0
    stop: int = 0

    def samples(self) -> Iterator[Sample]:
        if self.split is None:
            return read_tar_shard(self.source)
        return _split_samples(self.split, self.start, self.stop)


def photo_shards(source: str | Path, photos_per_shard: int = PHOTOS_PER_SHARD) -> list[PhotoShard]:
    """The shards of `source`, in a fixed order: a folder of `*.tar` shards, one `.tar` file, or a
    split folder (cut into shards of `photos_per_shard` photos, named `<split>-000000`, ...)."""
    source = Path(source)
    if source.is_file() and source.name.endswith(SHARD_SUFFIX):
        return [PhotoShard(source.name.removesuffix(SHARD_SUFFIX), source)]
    if not source.is_dir():
        raise InputError(f"{source}: no such shard file or folder (expected *.tar shards or a split folder)")
    if (source / LABELS_FILE).is_file():
        if photos_per_shard < 1:
            raise InputError(f"photos per shard must be at least 1, got {photos_per_shard}")
        split = load_split(source)
        count = math.ceil(len(split) / photos_per_shard)
        return [
            PhotoShard(
                f"{split.name}-{i:06d}",
                source,
                split,
                i * photos_per_shard,
                min(len(split), (i + 1) * photos_per_shard),
            )
            for i in range(count)
        ]
    tars = sorted(source.glob(f"*{SHARD_SUFFIX}"))
    if not tars:
        raise InputError(f"{source}: holds neither *{SHARD_SUFFIX} shards nor {LABELS_FILE}")
    return [PhotoShard(path.name.removesuffix(SHARD_SUFFIX), path) for path in tars]


def _split_samples(split: Split, start: int, stop: int) -> Iterator[Sample]:
    for image in split.images[start:stop]:
        try:
            photo, problem = image.path.read_bytes(), None
        except OSError as exc:
            photo, problem = None, f"cannot read {image.path}: {exc.strerror or exc}"
        yield Sample(sample_key(image.image), photo, image.lat, image.lon, image.author, problem)


def sample_key(image_name: str) -> str:
    """The WebDataset key of a photo file name: its stem, dots made underscores (a reader splits
    a member's name at its first dot into key and extension)."""
    return Path(image_name).stem.replace(".", "_")


def read_tar_shard(path: Path) -> Iterator[Sample]:
    """The samples of one tar shard, streamed in member order (never the whole shard in memory)."""
    try:
        with tarfile.open(path, mode="r|*") as archive:
            key, members = None, {}
            for member in archive:
                if not member.isfile():
                    continue
                name = Path(member.name).name
                member_key, _, extension = name.partition(".")
                if key is not None and member_key != key:
                    yield _sample(path, key, members)
                    members = {}
                key = member_key
                members[extension.lower()] = archive.extractfile(member).read()
            if key is not None:
                yield _sample(path, key, members)
    except tarfile.TarError as exc:
        raise InputError(f"{path}: not a readable tar shard ({exc})") from None


def _sample(shard: Path, key: str, members: dict[str, bytes]) -> Sample:
    photo = next((members[e] for e in PHOTO_EXTENSIONS if e in members), None)
    if LABEL_EXTENSION not in members:
        return Sample(key, photo, math.nan, math.nan, "", f"{shard.name}: {key} has no .{LABEL_EXTENSION} label")
    try:
        label = json.loads(members[LABEL_EXTENSION])
        lat, lon = float(label["lat"]), float(label["lon"])
    except (ValueError, KeyError, TypeError) as exc:
        return Sample(key, photo, math.nan, math.nan, "", f"{shard.name}: {key}.json has no usable lat/lon ({exc})")
    author = str(label.get("author") or "")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return Sample(key, photo, lat, lon, author, f"{shard.name}: {key} has lat/lon ({lat}, {lon}) off the globe")
    if photo is None:
        return Sample(key, None, lat, lon, author, f"{shard.name}: {key} has no photo (.jpg, .jpeg, .png, .webp)")
    return Sample(key, photo, lat, lon, author)


def write_shards(split_folder: str | Path, out_dir: str | Path, photos_per_shard: int = PHOTOS_PER_SHARD) -> list[Path]:
    """Write a split folder as WebDataset shards `<split>-000000.tar`, ... in labels order; returns
    their paths. Each shard is written atomically, so a folder never holds a half-written shard
    under a shard's name."""
    shards = photo_shards(split_folder, photos_per_shard)
    if shards[0].split is None:
        raise InputError(f"{split_folder}: not a split folder (no {LABELS_FILE})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [sample_key(image.image) for image in shards[0].split.images]
    if len(set(keys)) != len(keys):
        raise InputError(f"{split_folder}: two photos share a key once dots are made underscores")
    written = []
    for shard in shards:
        path = out_dir / f"{shard.name}{SHARD_SUFFIX}"
        with (
            written_atomically(path) as stream,
            tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as archive,
        ):
            for sample, image in zip(shard.samples(), shard.split.images[shard.start : shard.stop], strict=True):
                if sample.photo is None:
                    raise InputError(sample.problem)
                extension = Path(image.image).suffix.lower().lstrip(".") or "jpg"
                label = {"image": image.image, "lat": sample.lat, "lon": sample.lon, "author": sample.author}
                _add(archive, f"{sample.key}.{extension}", sample.photo)
                _add(archive, f"{sample.key}.{LABEL_EXTENSION}", json.dumps(label, sort_keys=True).encode())
        written.append(path)
    return written


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed metadata, so the same split always gives byte-identical shards.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    archive.addfile(info, io.BytesIO(data))

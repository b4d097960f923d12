"""How far the judge replay's perceptual hash moves when a photo is shrunk and re-encoded, against
how near the nearest other photo lies: the measurement behind replay.MATCH_THRESHOLD.

Indexes the Im2GPS3k train+val photos (timed: the replay's start), then sends each one back as
the judge would, shrunk to --side px and re-encoded as JPEG at --quality, and prints the
percentiles of its Hamming distance to its own hash and to the nearest other photo's, how many
land beyond the threshold, and how many would match the wrong photo.

    .venv/bin/python bench/judge_replay_match.py [--side 256] [--quality 70]
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image, ImageOps

from geoloc.common.paths import data_root
from geoloc.judge.replay import MATCH_THRESHOLD, PhotoIndex, hamming_distances, perceptual_hash

PERCENTILES = (0, 1, 5, 50, 95, 99, 100)


def resent(path, side: int, quality: int) -> np.ndarray:
    with Image.open(path) as photo:
        image = ImageOps.exif_transpose(photo).convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as sent:
        return perceptual_hash(sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--quality", type=int, default=70)
    args = parser.parse_args()
    folders = [data_root() / "im2gps3k" / split / "images" for split in ("train", "val")]
    index = PhotoIndex.build(folders)
    print(f"{len(index.names)} photos indexed in {index.seconds:.2f} s")
    paths = [folder / name for folder in folders for name in sorted(p.name for p in folder.iterdir())]
    by_name = {name: row for row, name in enumerate(index.names)}
    own, other = [], []
    for path in paths:
        distances = hamming_distances(index.hashes, resent(path, args.side, args.quality))
        row = by_name[path.name]
        own.append(distances[row])
        other.append(np.delete(distances, row).min())
    own, other = np.array(own), np.array(other)
    print(f"percentiles {PERCENTILES} of the distance in bits, sent at {args.side} px, JPEG quality {args.quality}:")
    print(f"  to its own hash:      {np.percentile(own, PERCENTILES).astype(int).tolist()}")
    print(f"  to the nearest other: {np.percentile(other, PERCENTILES).astype(int).tolist()}")
    print(
        f"threshold {MATCH_THRESHOLD}: {(own > MATCH_THRESHOLD).sum()} photos beyond it, "
        f"{(other <= MATCH_THRESHOLD).sum()} with another photo within it, {(other <= own).sum()} nearer another"
    )


if __name__ == "__main__":
    main()

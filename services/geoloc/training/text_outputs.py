"""The text expert's answers for every photo of a split, as the service computes them.

Reading is the slow part (about 0.3 s a photo, more with Tesseract), and it does not depend on
any fold: what a photo's text says is fixed. So the lines read are cached per photo under the
cache dir, keyed by the reader's options, and the answers (evidence.py, cheap) are recomputed
from them on every run. Nothing is trained on the photos: the same answers serve every fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geoloc.artifacts.files import written_atomically
from geoloc.artifacts.versions import content_version
from geoloc.common.photos import decode_photo
from geoloc.text.answers import text_points
from geoloc.text.evidence import EvidenceSettings, TextAnswerer
from geoloc.text.places import PLACES_PER_COUNTRY
from geoloc.text.reading import ReadLine, TextReader

# The most points one answer can have.
MAX_POINTS = EvidenceSettings().max_places + EvidenceSettings().max_countries * PLACES_PER_COUNTRY


def read_lines(paths: list[Path], reader_options: dict, cache_dir: Path, decode) -> list[list[ReadLine]]:
    """Every photo's lines, read once and cached (one JSON file of {photo name: lines} per reader setting)."""
    key = content_version(reader_options)
    path = cache_dir / "text" / f"lines-{key}.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    missing = [p for p in paths if p.name not in cached]
    if missing:
        reader = TextReader(**reader_options)
        for done, photo in enumerate(missing, 1):
            cached[photo.name] = [line.__dict__ for line in reader.read(decode(photo.read_bytes()))]
            if done % 100 == 0 or done == len(missing):
                path.parent.mkdir(parents=True, exist_ok=True)
                with written_atomically(path) as f:
                    f.write(json.dumps(cached).encode())
                print(f"  read text in {done}/{len(missing)} photos", flush=True)
    return [[_line(row) for row in cached[p.name]] for p in paths]


def _line(row: dict) -> ReadLine:
    return ReadLine(row["text"], row["confidence"], tuple(tuple(c) for c in row["box"]), row["engine"])


def text_answers(lines: list[list[ReadLine]], answerer: TextAnswerer) -> np.ndarray:
    """[n, MAX_POINTS, 4] (lat, lon, weight, radius_km), zero-weight padding; a photo without text is all padding."""
    out = np.zeros((len(lines), MAX_POINTS, 4))
    for i, photo in enumerate(lines):
        out[i] = text_points(answerer.answer(photo), MAX_POINTS)
    return out


def cv_text_answers(paths: list[Path], cache_dir: Path) -> np.ndarray:
    """The text expert's answers [n, MAX_POINTS, 4] for these photos, with the service's default settings."""
    from geoloc.text.config import TextSettings

    settings = TextSettings()
    limits = settings.photo_limits()
    lines = read_lines(paths, settings.reader_options(), cache_dir, lambda data: decode_photo(data, limits))
    return text_answers(lines, settings.answerer())

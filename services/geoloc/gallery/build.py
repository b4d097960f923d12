"""Building a GPS gallery: coordinates -> GeoCLIP location embeddings -> a saved GalleryIndex.

The location encoder is frozen, so a gallery is embedded once, here, and never per query
(GeoCLIP's reference code re-embeds its whole gallery on every prediction).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from geoloc.artifacts.files import file_sha256
from geoloc.common.paths import ARTIFACTS_DIR
from geoloc.gallery.index import GalleryIndex
from geoloc.gallery.location_encoder import LocationEncoder, geoclip_package_dir, geoclip_weights_path

EMBED_BATCH = 4096
DEFAULT_GALLERY_DIR = ARTIFACTS_DIR / "gallery" / "geoclip_100k"


def default_gallery_csv() -> Path:
    """GeoCLIP's 100K MP-16 coordinates, as the geoclip package ships them (columns LAT,LON)."""
    return geoclip_package_dir() / "gps_gallery" / "coordinates_100K.csv"


def read_gps_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """`lat,lon[,label]` rows under a header (any case) -> coordinates [n, 2] and labels or None.

    Raises ValueError naming the file, line and problem for a row out of range or unreadable.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = [name.strip().lower() for name in next(rows, [])]
        if header[:2] != ["lat", "lon"]:
            raise ValueError(f"{path}: the header must start with lat,lon (got {','.join(header) or 'nothing'})")
        labelled = len(header) > 2
        coordinates, labels = [], []
        for line, row in enumerate(rows, start=2):
            try:
                lat, lon = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{line}: expected numbers lat,lon, got {row!r}") from None
            if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(
                    f"{path}:{line}: ({lat}, {lon}) is not a latitude in [-90, 90] and longitude in [-180, 180]"
                )
            coordinates.append((lat, lon))
            if labelled:
                labels.append(row[2] if len(row) > 2 else "")
    if not coordinates:
        raise ValueError(f"{path}: no coordinates")
    return np.asarray(coordinates, dtype=np.float64), (labels if labelled else None)


@torch.no_grad()
def embed_locations(encoder: LocationEncoder, coordinates: np.ndarray, progress: bool = True) -> np.ndarray:
    """Unit location embeddings [n, 512] float32 of `coordinates` [n, 2] (lat, lon degrees)."""
    points = torch.as_tensor(coordinates, dtype=torch.float32)
    chunks = []
    for start in tqdm(range(0, len(points), EMBED_BATCH), desc="embedding gallery", unit="batch", disable=not progress):
        chunks.append(torch.nn.functional.normalize(encoder(points[start : start + EMBED_BATCH]), dim=1))
    return torch.cat(chunks).numpy()


def build_gallery(csv_path: Path, out: Path, index_type: str = "auto", progress: bool = True) -> GalleryIndex:
    coordinates, labels = read_gps_csv(csv_path)
    weights = geoclip_weights_path("location_encoder_weights.pth")
    embeddings = embed_locations(LocationEncoder.pretrained(weights), coordinates, progress)
    gallery = GalleryIndex.build(
        embeddings,
        coordinates,
        labels=labels,
        index_type=index_type,
        encoder_sha256=file_sha256(weights),
        source=f"{Path(csv_path).name} sha256:{file_sha256(csv_path)}",
    )
    gallery.save(out)
    return gallery


def add_to_gallery(folder: Path, csv_path: Path, progress: bool = True) -> GalleryIndex:
    """Embeds `csv_path` and adds it to the saved gallery in `folder`, without rebuilding."""
    gallery = GalleryIndex.load(folder)
    weights = geoclip_weights_path("location_encoder_weights.pth")
    if file_sha256(weights) != gallery.manifest.encoder_sha256:
        raise ValueError(f"{folder} was built with other location-encoder weights; rebuild it instead")
    coordinates, labels = read_gps_csv(csv_path)
    if (labels is None) != (gallery.labels is None):
        raise ValueError(f"{csv_path}: {'has' if labels is not None else 'lacks'} a label column, unlike the gallery")
    embeddings = embed_locations(LocationEncoder.pretrained(weights), coordinates, progress)
    gallery.add(embeddings, coordinates, labels=labels, source=f"{Path(csv_path).name} sha256:{file_sha256(csv_path)}")
    gallery.save(folder)
    return gallery

"""A labelled split folder: `labels.csv` (image,lat,lon,author) next to an `images/` folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geoloc.common.paths import DATA_DIR_ENV, data_root
from geoloc.evaluation.csvio import LAT_LIMIT, LON_LIMIT, InputError, check_unique, read_table

LABELS_FILE = "labels.csv"
IMAGES_DIR = "images"
REQUIRED_COLUMNS = ("image", "lat", "lon")
IM2GPS3K = "im2gps3k"
DATA_FORMAT = (
    f"a data root holding {IM2GPS3K}/train and {IM2GPS3K}/val, each a split folder with "
    f"{IMAGES_DIR}/ and {LABELS_FILE} (image,lat,lon,author)"
)


@dataclass(frozen=True)
class LabelledImage:
    image: str  # file name inside images/, and the key predictions are matched on
    lat: float
    lon: float
    author: str
    path: Path  # where a live source finds the pixels; the CSV source never opens it


@dataclass(frozen=True)
class Split:
    root: Path
    images: tuple[LabelledImage, ...]

    @property
    def name(self) -> str:
        return self.root.name

    def __len__(self) -> int:
        return len(self.images)


def load_split(root: str | Path) -> Split:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such directory (expected a split folder holding {LABELS_FILE})")
    labels = root / LABELS_FILE
    if not labels.is_file():
        raise InputError(f"{labels}: no such file (a split folder must hold {LABELS_FILE})")
    header, rows = read_table(labels, REQUIRED_COLUMNS)
    if not rows:
        raise InputError(f"{labels}: no data rows after the header")
    # Author is not needed for scoring, so a labels file without it is still usable.
    has_author = "author" in header
    images: list[LabelledImage] = []
    for row in rows:
        name = row.required_text("image")
        images.append(
            LabelledImage(
                image=name,
                lat=row.coordinate("lat", LAT_LIMIT),
                lon=row.coordinate("lon", LON_LIMIT),
                author=row.text("author") if has_author else "",
                path=root / IMAGES_DIR / name,
            )
        )
    check_unique(rows, "image")
    return Split(root=root, images=tuple(images))


def im2gps3k_split(name: str, root: Path | None = None) -> Split:
    """The Im2GPS3k split `name` ("train" or "val") under the data root `root` (default: data_root()).

    A missing split is an InputError that says what to pass, not a traceback: a clone of the
    repository has no data folder beside it."""
    root = data_root() if root is None else Path(root)
    folder = root / IM2GPS3K / name
    if not (folder / LABELS_FILE).is_file():
        raise InputError(
            f"no Im2GPS3k {name} split at {folder}: pass --data DIR (or set {DATA_DIR_ENV}), {DATA_FORMAT}"
        )
    return load_split(folder)

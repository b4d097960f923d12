"""The answer's world map (geoloc.client.world_map) on synthetic LocateResponses: no servers."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from geoloc.client import world_map as world_map
from geoloc.v1 import common_pb2, orchestrator_pb2

PARIS = (48.8566, 2.3522)
HEAVY = (20.0, -40.0)  # mid-Atlantic, not marked: the overlay alone colours it
LIGHT = (-20.0, 70.0)  # Indian Ocean, a quarter of the heavy component's weight
PACIFIC = (15.0, -140.0)  # open sea, thousands of km from every component and off the graticule


def response(with_distribution: bool = True) -> orchestrator_pb2.LocateResponse:
    answer = orchestrator_pb2.LocateResponse(radius_50_km=300, radius_90_km=1000, localizability=0.5)
    best = orchestrator_pb2.Hypothesis(lat_deg=PARIS[0], lon_deg=PARIS[1], probability=0.5)
    answer.best_guess.CopyFrom(best)
    answer.hypotheses.extend([best, orchestrator_pb2.Hypothesis(lat_deg=-33.87, lon_deg=151.21, probability=0.2)])
    if with_distribution:
        answer.distribution.extend(
            [
                common_pb2.WeightedPoint(lat_deg=HEAVY[0], lon_deg=HEAVY[1], weight=0.6, radius_km=300),
                common_pb2.WeightedPoint(lat_deg=LIGHT[0], lon_deg=LIGHT[1], weight=0.15, radius_km=300),
                common_pb2.WeightedPoint(lat_deg=PARIS[0], lon_deg=PARIS[1], weight=0.25, radius_km=50),
            ]
        )
    return answer


def pixel(image: Image.Image, lat: float, lon: float) -> tuple[int, int, int]:
    """The documented projection: equirectangular, (lon, lat) = (-180, 90) at the top-left corner."""
    width, height = image.size
    return image.getpixel((int((lon + 180) / 360 * width), int((90 - lat) / 180 * height)))


def luminance(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Image.Image:
    path = world_map.draw_map(response(), tmp_path_factory.mktemp("map") / "answer.png", title="synthetic.jpg")
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def test_the_map_is_a_png_of_the_asked_size(tmp_path):
    assert world_map.draw_map(response(), tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (1440, 720)
    with Image.open(world_map.draw_map(response(), tmp_path / "sub" / "b.png", width=720)) as image:
        assert image.size == (720, 360)
    with pytest.raises(ValueError):
        world_map.draw_map(response(), tmp_path / "c.png", width=721)


def test_the_best_guess_carries_the_marker_and_its_90_percent_circle(drawn):
    assert pixel(drawn, *PARIS) == world_map.MARKER
    # The circle's northernmost point lies 1000 km due north of Paris (a meridian is a great circle).
    north = PARIS[0] + np.degrees(1000 / world_map.EARTH_RADIUS_KM)
    width, height = drawn.size
    x, y = int((PARIS[1] + 180) / 360 * width), int((90 - north) / 180 * height)
    around = {drawn.getpixel((x + dx, y + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    assert world_map.MARKER in around


def test_open_sea_without_density_is_the_ocean_colour_and_land_is_not(drawn):
    assert pixel(drawn, *PACIFIC) == world_map.OCEAN
    # Central Sahara and central Australia: land, far from every component.
    assert pixel(drawn, 23.0, 12.0) == world_map.LAND
    assert pixel(drawn, -25.0, 133.0) == world_map.LAND


def test_the_overlay_is_brightest_at_the_heavy_component_and_fades_with_distance(drawn, tmp_path):
    heavy, light = pixel(drawn, *HEAVY), pixel(drawn, *LIGHT)
    far = pixel(drawn, HEAVY[0], HEAVY[1] + 20)  # ~2,100 km east, open Atlantic, beyond the kernel
    assert heavy != world_map.OCEAN and light != world_map.OCEAN and far == world_map.OCEAN
    assert luminance(heavy) > luminance(light) + 10 > luminance(far) + 10
    # Going out from the heavy component, the overlay fades step by step down to the sea.
    steps = [luminance(pixel(drawn, HEAVY[0], HEAVY[1] + d)) for d in (0, 2, 4, 6, 8, 20)]
    assert all(a > b for a, b in zip(steps, steps[1:], strict=False)), steps
    # Without the distribution the same spot is plain sea: the colour came from the overlay.
    with Image.open(world_map.draw_map(response(with_distribution=False), tmp_path / "bare.png")) as bare:
        assert pixel(bare.convert("RGB"), *HEAVY) == world_map.OCEAN


def test_the_density_grid_matches_the_exact_mixture_where_it_is_shown():
    from geoloc.geo.mixtures import mixture_log_density
    from geoloc.geo.sphere import latlon_to_unit
    from geoloc.geo.vmf import vmf_kappa_for_radius_km

    rng = np.random.default_rng(1)
    n = 2000
    lat, lon = np.degrees(np.arcsin(rng.uniform(-0.95, 0.95, n))), rng.uniform(-180, 180, n)
    weight, radius = rng.dirichlet(np.ones(n)), rng.uniform(60, 800, n)
    started = time.perf_counter()
    grid = world_map.density_grid(lat, lon, weight, radius)
    elapsed = time.perf_counter() - started
    rows, cols = grid.shape
    assert (rows, cols) == (360, 720)
    i, j = rng.integers(0, rows, 4000), rng.integers(0, cols, 4000)
    cells = latlon_to_unit(90 - (i + 0.5) * 0.5, -180 + (j + 0.5) * 0.5)
    exact = np.exp(mixture_log_density(cells, latlon_to_unit(lat, lon), weight, vmf_kappa_for_radius_km(radius, 0.5)))
    shown = exact > grid.max() * 10**-world_map.DECADES
    assert shown.sum() > 1000
    assert np.allclose(grid[i, j][shown], exact[shown], rtol=1e-2)
    assert elapsed < 10  # ~0.3 s on a 2-core machine; the bound only catches an accidental dense evaluation

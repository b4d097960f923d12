"""A world map of one Locate answer, as a PNG drawn with Pillow alone (no matplotlib).

What is on it:

* The world in the equirectangular projection: pixel (x, y) of an image `width` wide and
  `width // 2` high covers longitude -180 + 360·x/width and latitude 90 - 180·y/height, so a
  point falls on pixel (int((lon + 180)/360·width), int((90 - lat)/180·height)). Countries are
  the Natural Earth 1:10m polygons that the place names use (places.country_shapes), filled a
  shade lighter than the sea, with grey borders and a light coastline. The coastline is read off the rasterised
  land itself (land pixels next to sea) rather than off the polygons' outer rings, because those
  rings also run along land borders and along the seams that Natural Earth cuts at ±180°.
* The fused density, when the response carries `distribution` (include_distribution=True): the
  weighted vMF kernels (each `radius_km` is its half-mass radius) summed on a 720 x 360 grid,
  then shown log-scaled over DECADES decades below the map's highest value as a translucent heat
  overlay (violet, low, to yellow, high; transparent below the range).
* The hypotheses as white circles whose area grows with their probability, numbered by rank;
  the 90 % radius as a geodesic circle around the best guess; the best guess as a green star;
  the EXIF GPS position, when the photo had one, as a magenta diamond; a legend line at the bottom.
  The map is dark, so that a brighter pixel always means a denser place.

The grid sum is windowed: each kernel is evaluated only over the cells where it exceeds 1e-3 of
the overlay's lowest shown level (a bound worked out from its κ), grouped into buckets of equal
window size so that numpy does the work. 2,000 components take ~0.2 s (the whole draw well under
a second, after a one-off ~0.5 s reading the country shapes, cached per process).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from geoloc.geo.sphere import EARTH_RADIUS_KM, HEMISPHERE_RADIUS_KM
from geoloc.geo.vmf import vmf_kappa_for_radius_km, vmf_log_normaliser
from geoloc.v1 import orchestrator_pb2

# A dark map, so that brighter always means denser: every heat colour is lighter than land and
# sea, and both its lightness and its opacity rise with the density.
OCEAN = (24, 36, 58)
GRATICULE = (36, 50, 76)
LAND = (62, 66, 74)
BORDER = (98, 102, 112)
COAST = (165, 175, 190)
MARKER = (0, 230, 120)  # the best guess and its 90 % circle
MARKER_EDGE = (0, 60, 30)
EXIF_MARKER = (255, 60, 220)
HYPOTHESIS_FILL = (255, 255, 255, 60)
HYPOTHESIS_EDGE = (240, 240, 240)
TEXT = (235, 235, 235)
TEXT_STROKE = (10, 14, 24)
LEGEND_FILL = (10, 14, 24, 210)

GRID_WIDTH = 720  # density cells across (0.5°); the grid is half as high
DECADES = 4.0  # the overlay shows densities down to 10^-DECADES of the map's highest
_CUTOFF_BELOW_FLOOR = 1e-3  # a kernel is dropped where it is below this share of the lowest shown level
_CHUNK_ELEMENTS = 2_000_000  # bound on kernel x window cells evaluated at once
# The heat colour map: (position in [0, 1], r, g, b, alpha), luminance rising with density.
# The lowest levels fade in from transparent, so the map's floor has no hard edge.
_HEAT_STOPS = np.array(
    [
        (0.00, 110, 40, 160, 0),
        (0.20, 125, 45, 175, 90),
        (0.50, 205, 55, 125, 150),
        (0.80, 250, 140, 40, 200),
        (1.00, 255, 245, 120, 235),
    ],
    dtype=np.float64,
)


def draw_map(
    response: orchestrator_pb2.LocateResponse, path: str | Path, width: int = 1440, title: str | None = None
) -> Path:
    """Draws the answer's map as a PNG of `width` x `width // 2` pixels at `path`; returns the path.

    `width` must be even and at least 360. Without `response.distribution` the map has no heat
    overlay (the legend says so). `title` (e.g. the photo's name) opens the legend line.
    """
    if width < 360 or width % 2:
        raise ValueError(f"width must be an even number of pixels >= 360, got {width}")
    height = width // 2
    image = _base_map(width)
    points = response.distribution
    if len(points):
        heat = heat_overlay(
            density_grid(
                np.array([p.lat_deg for p in points]),
                np.array([p.lon_deg for p in points]),
                np.array([p.weight for p in points]),
                np.array([p.radius_km for p in points]),
            ),
            width,
            height,
        )
        image = Image.alpha_composite(image, heat)
    # Markers go on an RGB image: ImageDraw blends translucent fills only into RGB, not RGBA.
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image, "RGBA")
    font = _font(max(11, width // 90))
    _draw_hypotheses(draw, response, width, font)
    best = response.best_guess
    if response.radius_90_km > 0:
        for segment in _geodesic_circle(best.lat_deg, best.lon_deg, response.radius_90_km, width):
            draw.line(segment, fill=MARKER, width=max(2, width // 600))
    if response.HasField("exif_gps"):
        _diamond(draw, _pixel(response.exif_gps.lat_deg, response.exif_gps.lon_deg, width), max(5, width // 200))
    _star(draw, _pixel(best.lat_deg, best.lon_deg, width), max(7, width // 110))
    _legend(draw, response, width, font, title, bool(len(points)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG")
    return path


def density_grid(
    lat_deg: np.ndarray, lon_deg: np.ndarray, weight: np.ndarray, radius_km: np.ndarray, grid_width: int = GRID_WIDTH
) -> np.ndarray:
    """The mixture Σ w_i vMF(c_i, κ_i) per steradian at the centres of a grid_width x grid_width/2
    lat/lon grid (row 0 the northernmost), weights normalised to sum 1.

    κ_i makes radius_km the kernel's half-mass radius, as in the API; kernels narrower than a grid
    cell are drawn one cell wide, so that a sharp answer shows as a spot instead of falling between
    cell centres. A kernel's values more than DECADES + 3 decades below the largest kernel peak are
    dropped (within 1 % of the exact sum wherever the overlay shows it).
    """
    rows, cols = grid_width // 2, grid_width
    step = 180.0 / rows
    keep = np.isfinite(weight) & (weight > 0)
    lat, lon, w = np.radians(lat_deg[keep]), np.radians(lon_deg[keep]), weight[keep] / weight[keep].sum()
    cell_km = math.radians(step) * EARTH_RADIUS_KM
    radius = np.clip(np.nan_to_num(radius_km[keep], nan=cell_km), cell_km, HEMISPHERE_RADIUS_KM)  # wider: near uniform
    kappa = vmf_kappa_for_radius_km(radius, 0.5)
    log_peak = np.log(w) + vmf_log_normaliser(kappa)
    # Each kernel's angular reach: where its term falls to the cutoff, κ(1 - cos θ) = log(peak / cutoff).
    log_cutoff = log_peak.max() - DECADES * math.log(10) + math.log(_CUTOFF_BELOW_FLOOR)
    reach = (log_peak - log_cutoff) / kappa
    visible = reach > 0
    theta = np.arccos(1 - np.clip(reach, 0.0, 2.0))

    grid_lat = np.radians(90.0 - (np.arange(rows) + 0.5) * step)
    grid_lon = np.radians(-180.0 + (np.arange(cols) + 0.5) * step)
    sin_grid, cos_grid = np.sin(grid_lat), np.cos(grid_lat)
    centre_row = np.clip(((np.pi / 2 - lat) / math.radians(step)).astype(np.int64), 0, rows - 1)
    centre_col = (np.floor((lon + np.pi) / math.radians(step)).astype(np.int64)) % cols
    half_rows = np.minimum(np.ceil(np.degrees(theta) / step).astype(np.int64) + 1, rows)
    # A cap that keeps clear of the poles spans ±asin(sin θ / cos φ) in longitude; one that
    # reaches a pole spans every longitude.
    clear = np.abs(lat) + theta < np.pi / 2 - math.radians(step)
    span = np.arcsin(np.clip(np.sin(theta) / np.maximum(np.cos(lat), 1e-12), 0.0, 1.0))
    half_cols = np.where(clear, np.ceil(np.degrees(span) / step).astype(np.int64) + 1, cols)

    total = np.zeros(rows * cols)
    # Bucket kernels by window size (rounded up to powers of two) so each bucket is one array job.
    bucket_rows = 2 ** np.ceil(np.log2(np.maximum(half_rows, 1))).astype(np.int64)
    bucket_cols = np.where(
        2 * half_cols + 1 >= cols, cols, 2 ** np.ceil(np.log2(np.maximum(half_cols, 1))).astype(np.int64)
    )
    for hr, hc in set(zip(bucket_rows[visible].tolist(), bucket_cols[visible].tolist(), strict=False)):
        members = np.flatnonzero(visible & (bucket_rows == hr) & (bucket_cols == hc))
        row_offsets = np.arange(-hr, hr + 1)
        full = hc >= cols
        col_offsets = np.arange(cols) if full else np.arange(-hc, hc + 1)
        per_kernel = len(row_offsets) * len(col_offsets)
        for start in range(0, len(members), max(1, _CHUNK_ELEMENTS // per_kernel)):
            i = members[start : start + max(1, _CHUNK_ELEMENTS // per_kernel)]
            r = centre_row[i, None] + row_offsets[None, :]  # [n, R]
            inside = (r >= 0) & (r < rows)
            r = np.clip(r, 0, rows - 1)
            c = col_offsets[None, :].repeat(len(i), 0) if full else (centre_col[i, None] + col_offsets[None, :]) % cols
            cos_dlon = np.cos(grid_lon[c] - lon[i, None])  # [n, C]
            dot = (
                np.sin(lat[i])[:, None, None] * sin_grid[r][:, :, None]
                + (np.cos(lat[i])[:, None] * cos_grid[r])[:, :, None] * cos_dlon[:, None, :]
            )
            value = np.exp(log_peak[i, None, None] + kappa[i, None, None] * (dot - 1.0))
            value *= inside[:, :, None]
            total += np.bincount((r[:, :, None] * cols + c[:, None, :]).ravel(), value.ravel(), minlength=rows * cols)
    return total.reshape(rows, cols)


def heat_overlay(grid: np.ndarray, width: int, height: int) -> Image.Image:
    """An RGBA image `width` x `height` of the grid, log-scaled over DECADES below its maximum."""
    top = grid.max()
    if not top > 0:
        return Image.new("RGBA", (width, height), (0, 0, 0, 0))
    with np.errstate(divide="ignore"):
        level = (np.log10(np.maximum(grid, 0) / top) + DECADES) / DECADES  # 1 at the top, 0 at the floor
    # Resample the level (not the colours) so the edges stay smooth; below 0 is transparent.
    smooth = np.asarray(
        Image.fromarray(np.maximum(level, -0.05).astype(np.float32), "F").resize(
            (width, height), Image.Resampling.BILINEAR
        )
    )
    index = np.clip(np.round(smooth * 255), -1, 255).astype(np.int16)
    rgba = np.where((index >= 0)[..., None], _heat_lut()[np.maximum(index, 0)], 0).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


@functools.lru_cache(maxsize=1)
def _heat_lut() -> np.ndarray:
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, _HEAT_STOPS[:, 0], _HEAT_STOPS[:, k]) for k in range(1, 5)], axis=1)


@functools.lru_cache(maxsize=1)
def _country_rings() -> list[np.ndarray]:
    """Every ring of every country polygon as an (n, 2) lon/lat array; read once per process."""
    from geoloc.places import country_shapes

    rings = []
    for shape in country_shapes():
        points = np.asarray(shape.points, dtype=np.float64)
        bounds = [*shape.parts, len(points)]
        rings.extend(points[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=False) if b - a >= 3)
    return rings


@functools.lru_cache(maxsize=4)
def _base_map_bytes(width: int) -> tuple[bytes, tuple[int, int]]:
    """The land and sea of a map `width` wide, cached per process (a few maps per CLI call share it)."""
    height = width // 2
    image = Image.new("RGB", (width, height), OCEAN)
    draw = ImageDraw.Draw(image)
    for lon in range(-150, 180, 30):
        x = (lon + 180) / 360 * width
        draw.line([(x, 0), (x, height)], fill=GRATICULE)
    for lat in range(-60, 90, 30):
        y = (90 - lat) / 180 * height
        draw.line([(0, y), (width, y)], fill=GRATICULE)
    land = Image.new("L", (width, height), 0)
    land_draw = ImageDraw.Draw(land)
    for ring in _country_rings():
        xy = _project_ring(ring, width)
        if len(xy) >= 6:
            # Holes are filled too: in this edition they are other countries' enclaves (Lesotho,
            # San Marino...), land either way.
            draw.polygon(xy, fill=LAND, outline=BORDER)
            land_draw.polygon(xy, fill=255)
    is_land = np.asarray(land) > 0
    # Coast: land next to sea among its four neighbours; longitude wraps, the poles do not.
    sea = ~is_land
    near_sea = np.roll(sea, 1, axis=1) | np.roll(sea, -1, axis=1)
    near_sea[1:] |= sea[:-1]
    near_sea[:-1] |= sea[1:]
    pixels = np.array(image)
    pixels[is_land & near_sea] = COAST
    return pixels.tobytes(), (width, height)


def _base_map(width: int) -> Image.Image:
    data, size = _base_map_bytes(width)
    return Image.frombytes("RGB", size, data).convert("RGBA")


def _project_ring(ring: np.ndarray, width: int) -> list[float]:
    """The ring in pixel coordinates as a flat [x0, y0, x1, y1, ...], consecutive repeats dropped."""
    xy = np.empty_like(ring)
    xy[:, 0] = (ring[:, 0] + 180.0) / 360.0 * width
    xy[:, 1] = (90.0 - ring[:, 1]) / 180.0 * (width // 2)
    # 10m rings have ~100 vertices per pixel at this scale; repeats only slow the fill down.
    snapped = np.round(xy * 2)
    keep = np.ones(len(xy), dtype=bool)
    keep[1:] = np.any(snapped[1:] != snapped[:-1], axis=1)
    return xy[keep].ravel().tolist()


def _pixel(lat_deg: float, lon_deg: float, width: int) -> tuple[float, float]:
    lon = (lon_deg + 180.0) % 360.0 - 180.0
    return (lon + 180.0) / 360.0 * width, (90.0 - lat_deg) / 180.0 * (width // 2)


def _geodesic_circle(lat_deg: float, lon_deg: float, radius_km: float, width: int, n: int = 360) -> list[list[tuple]]:
    """The circle of great-circle radius_km around the point, as polylines split at the map's edges."""
    delta = min(radius_km / EARTH_RADIUS_KM, math.pi - 1e-6)
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    bearing = np.linspace(0, 2 * np.pi, n + 1)
    lat2 = np.arcsin(
        np.clip(math.sin(lat) * math.cos(delta) + math.cos(lat) * math.sin(delta) * np.cos(bearing), -1, 1)
    )
    lon2 = lon + np.arctan2(
        np.sin(bearing) * math.sin(delta) * math.cos(lat), math.cos(delta) - math.sin(lat) * np.sin(lat2)
    )
    points = [_pixel(a, o, width) for a, o in zip(np.degrees(lat2), np.degrees(lon2), strict=False)]
    segments, current = [], [points[0]]
    for previous, point in zip(points[:-1], points[1:], strict=False):
        if abs(point[0] - previous[0]) > width / 2:  # crossed the antimeridian: start a new polyline
            segments.append(current)
            current = []
        current.append(point)
    segments.append(current)
    return [s for s in segments if len(s) >= 2]


def _draw_hypotheses(draw: ImageDraw.ImageDraw, response, width: int, font) -> None:
    scale = width / 1440
    # Least probable first, so that the likelier circles and their numbers end on top.
    for rank, h in sorted(enumerate(response.hypotheses, 1), key=lambda item: item[1].probability):
        x, y = _pixel(h.lat_deg, h.lon_deg, width)
        r = scale * (6 + 26 * math.sqrt(max(h.probability, 0.0)))
        draw.ellipse(
            [x - r, y - r, x + r, y + r], fill=HYPOTHESIS_FILL, outline=HYPOTHESIS_EDGE, width=max(1, round(2 * scale))
        )
        draw.text(
            (x + 0.75 * r + 2, y - 0.75 * r - 2),
            str(rank),
            font=font,
            fill=TEXT,
            anchor="lb",
            stroke_width=2,
            stroke_fill=TEXT_STROKE,
        )


def _star(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float) -> None:
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    xy = [(centre[0] + r * math.cos(a), centre[1] - r * math.sin(a)) for a, r in zip(angles, radii, strict=False)]
    draw.polygon(xy, fill=MARKER, outline=MARKER_EDGE, width=1)


def _diamond(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float) -> None:
    x, y = centre
    draw.polygon(
        [(x, y - radius), (x + radius, y), (x, y + radius), (x - radius, y)], fill=EXIF_MARKER, outline=TEXT_STROKE
    )


def _legend(draw: ImageDraw.ImageDraw, response, width: int, font, title: str | None, has_density: bool) -> None:
    height = width // 2
    best = response.best_guess
    parts = [title] if title else []
    parts.append(f"best guess {best.lat_deg:.4f}, {best.lon_deg:.4f} (star)")
    parts.append(f"90 % within {response.radius_90_km:,.0f} km (green circle)")
    parts.append(f"{len(response.hypotheses)} hypotheses (circles by probability)")
    if response.HasField("exif_gps"):
        parts.append("EXIF GPS (diamond)")
    text = "  ·  ".join(parts)
    size = font.size if hasattr(font, "size") else 11
    pad = size // 2
    bar_width = width // 8
    box_height = 2 * size + 3 * pad
    top = height - box_height - pad
    draw.rectangle([pad, top, width - pad, height - pad], fill=LEGEND_FILL)
    draw.text((2 * pad, top + pad), text, font=font, fill=TEXT)
    y = top + 2 * pad + size
    if has_density:
        lut = _heat_lut()
        for i in range(bar_width):
            r, g, b, a = lut[int(255 * i / max(1, bar_width - 1))]
            draw.line([(2 * pad + i, y), (2 * pad + i, y + size)], fill=(int(r), int(g), int(b), int(a)))
        draw.text(
            (3 * pad + bar_width, y),
            f"fused density, log scale: {DECADES:g} decades below its peak to the peak",
            font=font,
            fill=TEXT,
        )
    else:
        draw.text(
            (2 * pad, y), "no fused density in the response (ask with include_distribution)", font=font, fill=TEXT
        )


@functools.lru_cache(maxsize=4)
def _font(size: int):
    try:
        return ImageFont.load_default(size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()

"""Points on the sphere: great-circle distances, unit vectors and geodesics.

Conventions used across the project:

* The Earth is a sphere of radius EARTH_RADIUS_KM; distances are great-circle km.
* Latitude/longitude are degrees, latitude in [-90, 90], longitude in [-180, 180).
* Unit vectors are float64 in the last axis of shape (..., 3): x toward (0°, 0°),
  y toward (0°, 90°E), z toward the north pole. Every function broadcasts over the
  leading dimensions.

vMF kernels are in geoloc.geo.vmf, their mixtures and modes in geoloc.geo.mixtures, S2 cells in
geoloc.geo.s2cells.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

EARTH_RADIUS_KM = 6371.0
HEMISPHERE_RADIUS_KM = 0.5 * np.pi * EARTH_RADIUS_KM  # the great-circle radius of half the sphere


# --- Distances and unit vectors ----------------------------------------------


def haversine_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg) -> np.ndarray:
    """Great-circle distance in km on a sphere of radius EARTH_RADIUS_KM; broadcasts."""
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1_deg, lon1_deg, lat2_deg, lon2_deg)
    )
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def as_float64(a: ArrayLike) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def normalised(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def latlon_to_unit(lat_deg: ArrayLike, lon_deg: ArrayLike) -> np.ndarray:
    """Unit vectors (..., 3) for latitude/longitude in degrees."""
    lat, lon = np.broadcast_arrays(np.radians(as_float64(lat_deg)), np.radians(as_float64(lon_deg)))
    cos_lat = np.cos(lat)
    # Same operation order as S2's LatLng.ToPoint, so leaf cell ids match bit for bit.
    return np.stack([np.cos(lon) * cos_lat, np.sin(lon) * cos_lat, np.sin(lat)], axis=-1)


def unit_to_latlon(xyz: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(lat_deg in [-90, 90], lon_deg in [-180, 180)) of vectors (..., 3); any length > 0."""
    v = as_float64(xyz)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    # atan2 is scale invariant, which is what makes non-normalised input safe.
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, np.where(lon >= 180.0, lon - 360.0, lon)


# --- Great-circle geometry ---------------------------------------------------


def great_circle_angle(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Angle in radians, in [0, π], between vectors (..., 3); any length > 0."""
    x, y = as_float64(x), as_float64(y)
    # atan2(|x×y|, x·y) keeps full relative precision near 0 and near π, unlike acos.
    return np.arctan2(np.linalg.norm(np.cross(x, y), axis=-1), np.sum(x * y, axis=-1))


def km_to_radians(km: ArrayLike) -> np.ndarray:
    """Great-circle distance in km -> central angle in radians."""
    return as_float64(km) / EARTH_RADIUS_KM


def radians_to_km(rad: ArrayLike) -> np.ndarray:
    """Central angle in radians -> great-circle distance in km."""
    return as_float64(rad) * EARTH_RADIUS_KM


_DEGENERATE_SIN = 1e-12  # |x0 × x1| below this: the arc's direction is numerically undefined


def _default_tangent(x0: np.ndarray) -> np.ndarray:
    """Unit tangent at x0 pointing north; at the poles, toward +x (the lon 0 meridian)."""
    at_pole = np.hypot(x0[..., :1], x0[..., 1:2]) < _DEGENERATE_SIN
    ref = np.where(at_pole, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    return normalised(ref - np.sum(ref * x0, axis=-1, keepdims=True) * x0)


def geodesic_interpolate(x0: ArrayLike, x1: ArrayLike, t: ArrayLike) -> np.ndarray:
    """Point at fraction t along the shortest great-circle arc x0 -> x1 (slerp); unit norm.

    x0, x1: (..., 3), t: (...), all broadcast; t outside [0, 1] extrapolates along the
    same great circle. Identical endpoints return x0. For (numerically) antipodal
    endpoints every great circle is shortest; we leave x0 heading north along its
    meridian (from a pole: along the lon 0 meridian, toward +x).
    """
    x0, x1 = normalised(as_float64(x0)), normalised(as_float64(x1))
    t = as_float64(t)[..., None]
    axis = np.cross(x0, x1)
    sin_theta = np.linalg.norm(axis, axis=-1, keepdims=True)
    theta = np.arctan2(sin_theta, np.sum(x0 * x1, axis=-1, keepdims=True))
    degenerate = sin_theta < _DEGENERATE_SIN
    # (x0 × x1) × x0 = x1 − (x0·x1) x0: the in-plane direction toward x1, of length sin θ.
    tangent = np.cross(axis, x0) / np.where(degenerate, 1.0, sin_theta)
    tangent = np.where(degenerate, _default_tangent(x0), tangent)
    angle = t * theta
    return normalised(np.cos(angle) * x0 + np.sin(angle) * tangent)

"""S2 cells: ids, levels, parents, centres and corners, and the S2 token strings.

Cell ids are the real S2 ids (uint64), bit-compatible with the reference library; points are
unit vectors and degrees as in geoloc.geo.sphere.
"""

from __future__ import annotations

import operator
import re

import numpy as np
from numpy.typing import ArrayLike

from geoloc.geo.sphere import latlon_to_unit, unit_to_latlon

# A leaf id is face (3 bits) | Hilbert position (60 bits, 2 per level) | 1; a level-L
# cell keeps L position digits followed by a single 1 bit at 2(30 − L).

MAX_LEVEL = 30
_MAX_SIZE = 1 << MAX_LEVEL
_U = np.uint64
_SWAP, _INVERT = 1, 2
# Per orientation: the quadrant (i_bit << 1 | j_bit) visited at each curve position.
_POS_TO_IJ = np.array([[0, 1, 3, 2], [0, 2, 3, 1], [3, 2, 0, 1], [3, 1, 0, 2]], dtype=np.int64)
_IJ_TO_POS = np.argsort(_POS_TO_IJ, axis=1)  # inverse permutation of each row
# How a child's frame turns relative to its parent, by curve position.
_POS_TO_ORIENT = np.array([_SWAP, 0, 0, _SWAP | _INVERT], dtype=np.int64)
# S2's face frames: xyz = _FACE_FRAME[face] @ (1, u, v). Each is a signed permutation, so
# its transpose inverts it exactly (products with 0 and ±1 round nothing).
_FACE_FRAME = np.array(
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
        [[0, -1, 0], [0, 0, -1], [1, 0, 0]],
        [[-1, 0, 0], [0, 0, -1], [0, -1, 0]],
        [[0, 0, 1], [-1, 0, 0], [0, -1, 0]],
        [[0, 0, 1], [0, 1, 0], [-1, 0, 0]],
    ],
    dtype=np.float64,
)


def _xyz_to_face_uv(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.abs(p)
    # S2's tie-break: a later axis wins ties, so the face is reproducible on edges.
    axis = np.where(a[:, 0] > a[:, 1], np.where(a[:, 0] > a[:, 2], 0, 2), np.where(a[:, 1] > a[:, 2], 1, 2))
    face = axis + 3 * (p[np.arange(len(p)), axis] < 0)
    q = np.einsum("nij,ni->nj", _FACE_FRAME[face], p)  # (1, u, v) scaled by the face coordinate
    return face, q[:, 1] / q[:, 0], q[:, 2] / q[:, 0]


def _face_uv_to_xyz(face: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    one_u_v = np.stack(np.broadcast_arrays(1.0, u, v), axis=-1)
    return np.einsum("...ij,...j->...i", _FACE_FRAME[face], one_u_v)


def _uv_to_st(u: np.ndarray) -> np.ndarray:
    s = 0.5 * np.sqrt(1.0 + 3.0 * np.abs(u))  # S2's quadratic projection, equal-area-ish cells
    return np.where(u >= 0, s, 1.0 - s)


def _st_to_uv(s: np.ndarray) -> np.ndarray:
    return np.where(s >= 0.5, (1.0 / 3.0) * (4 * s * s - 1), (1.0 / 3.0) * (1 - 4 * (1 - s) * (1 - s)))


def checked_level(level: int) -> int:
    try:
        level = operator.index(level)
    except TypeError as exc:
        raise ValueError(f"level must be an integer, got {level!r}") from exc
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"level must be in 0..{MAX_LEVEL}, got {level}")
    return level


def checked_cell_ids(cell_id: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(ids as uint64, their levels); ValueError unless every id is a valid S2 cell id."""
    if isinstance(cell_id, np.ndarray) and cell_id.dtype.kind in "iu":
        if cell_id.dtype.kind == "i" and np.any(cell_id < 0):
            raise ValueError("invalid S2 cell id: negative")
        ids = cell_id.astype(np.uint64)
    else:
        # Plain asarray would turn Python ints >= 2^63 mixed with smaller ones into float64.
        obj = np.asarray(cell_id, dtype=object)
        try:
            ints = [operator.index(v) for v in obj.flat]
        except TypeError as exc:
            raise ValueError(f"invalid S2 cell id: not an integer in {cell_id!r}") from exc
        if not all(0 <= v < 1 << 64 for v in ints):
            raise ValueError(f"invalid S2 cell id: outside [0, 2^64) in {cell_id!r}")
        ids = np.array(ints, dtype=np.uint64).reshape(obj.shape)
    with np.errstate(over="ignore"):  # two's-complement negation wraps by design
        low_bit = ids & (~ids + _U(1))
    # Powers of two convert to float64 exactly, so log2 gives the trailing-zero count.
    tz = np.log2(np.where(low_bit == 0, 1, low_bit).astype(np.float64)).astype(np.int64)
    valid = (ids != 0) & ((ids >> _U(61)) <= 5) & (tz % 2 == 0) & (tz <= 2 * MAX_LEVEL)
    if not np.all(valid):
        raise ValueError(f"invalid S2 cell id {int(ids[~valid].flat[0])}")
    return ids, MAX_LEVEL - tz // 2


def _face_ij_to_leaf(face: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    orient = face & _SWAP
    pos = np.zeros_like(i)
    for bit in range(MAX_LEVEL - 1, -1, -1):  # coarsest level first
        digit = _IJ_TO_POS[orient, (((i >> bit) & 1) << 1) | ((j >> bit) & 1)]
        pos = (pos << 2) | digit
        orient = orient ^ _POS_TO_ORIENT[digit]
    return (face.astype(np.uint64) << _U(61)) | (pos.astype(np.uint64) << _U(1)) | _U(1)


def _leaf_ij(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face and (i, j) of the leaf the id's bits spell; the low bits past the level are noise."""
    face = (ids >> _U(61)).astype(np.int64)
    pos = ((ids >> _U(1)) & _U((1 << 60) - 1)).astype(np.int64)
    orient, i, j = face & _SWAP, np.zeros_like(face), np.zeros_like(face)
    for shift in range(2 * MAX_LEVEL - 2, -1, -2):
        digit = (pos >> shift) & 3
        quad = _POS_TO_IJ[orient, digit]
        i, j = (i << 1) | (quad >> 1), (j << 1) | (quad & 1)
        orient = orient ^ _POS_TO_ORIENT[digit]
    return face, i, j


def latlon_to_cell_id(lat_deg: ArrayLike, lon_deg: ArrayLike, level: int = 30) -> np.ndarray:
    """S2 cell ids (uint64) at `level` containing the points; same ids as the S2 library."""
    level = checked_level(level)
    p = latlon_to_unit(lat_deg, lon_deg)
    if not np.all(np.isfinite(p)):
        raise ValueError("latitude/longitude must be finite")
    flat = p.reshape(-1, 3)
    face, u, v = _xyz_to_face_uv(flat)
    i, j = (np.clip(np.floor(_MAX_SIZE * _uv_to_st(w)), 0, _MAX_SIZE - 1).astype(np.int64) for w in (u, v))
    return _parent(_face_ij_to_leaf(face, i, j), level).reshape(p.shape[:-1])


def _parent(ids: np.ndarray, level: int) -> np.ndarray:
    lsb = _U(1) << _U(2 * (MAX_LEVEL - level))
    return (ids & ~(lsb - _U(1))) | lsb


def cell_id_level(cell_id: ArrayLike) -> np.ndarray:
    """Level 0..30 of each S2 cell id."""
    return checked_cell_ids(cell_id)[1]


def cell_id_parent(cell_id: ArrayLike, level: int) -> np.ndarray:
    """Ancestor at `level` (<= each id's own level) of each S2 cell id."""
    ids, levels = checked_cell_ids(cell_id)
    level = checked_level(level)
    if np.any(levels < level):
        raise ValueError(f"parent level {level} is finer than a cell's own level {int(levels.min())}")
    return _parent(ids, level)


def _cell_bounds_st(cell_id: ArrayLike):
    ids, levels = checked_cell_ids(cell_id)
    face, i, j = _leaf_ij(ids)
    size = np.left_shift(1, MAX_LEVEL - levels)
    return face, i & -size, j & -size, size


def cell_id_to_latlon(cell_id: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(lat_deg, lon_deg) of each cell's centre: the (s, t) midpoint mapped to the sphere, as S2."""
    face, i0, j0, size = _cell_bounds_st(cell_id)
    # S2 takes the centre in (si, ti) = 2·(i, j) + size units of 2^-31.
    u = _st_to_uv((0.5 / _MAX_SIZE) * (2 * i0 + size))
    v = _st_to_uv((0.5 / _MAX_SIZE) * (2 * j0 + size))
    return unit_to_latlon(_face_uv_to_xyz(face, u, v))


def cell_id_to_vertices(cell_id: ArrayLike) -> np.ndarray:
    """Unit vectors (..., 4, 3) of each cell's corners, counter-clockwise from (u_lo, v_lo)."""
    face, i0, j0, size = _cell_bounds_st(cell_id)
    u_lo, u_hi, v_lo, v_hi = (_st_to_uv((1.0 / _MAX_SIZE) * b) for b in (i0, i0 + size, j0, j0 + size))
    u = np.stack([u_lo, u_hi, u_hi, u_lo], axis=-1)
    v = np.stack([v_lo, v_lo, v_hi, v_hi], axis=-1)
    xyz = _face_uv_to_xyz(face[..., None], u, v)
    return xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)


def cell_id_to_s2_token(cell_id: int) -> str:
    """Standard S2 token: 16-digit lowercase hex with trailing zeros stripped; "X" for 0."""
    cid = operator.index(cell_id)
    if not 0 <= cid < 1 << 64:
        raise ValueError(f"cell id must be in [0, 2^64), got {cid}")
    return f"{cid:016x}".rstrip("0") or "X"


_TOKEN_RE = re.compile(r"[0-9a-fA-F]{1,16}")


def s2_token_to_cell_id(token: str) -> int:
    """Inverse of cell_id_to_s2_token (hex is case-insensitive); ValueError if malformed."""
    if not isinstance(token, str):
        raise ValueError(f"S2 token must be a str, got {type(token).__name__}")
    if token in ("X", "x"):
        return 0
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError(f"malformed S2 token {token!r}: want 1-16 hex digits or 'X'")
    return int(token.ljust(16, "0"), 16)

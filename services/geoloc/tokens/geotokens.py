"""GeoTokens: an S2 cell as a short sequence of small-vocabulary tokens (the token expert's alphabet).

Token 0 is the face (0..5); each further token packs two consecutive Hilbert child digits as
4·d_first + d_second (0..15), so a prefix names an ancestor cell.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from geoloc.geo.s2cells import MAX_LEVEL, checked_cell_ids, checked_level

GEOTOKEN_LEVEL = 20
TOKEN_VOCAB_SIZES = (6,) + (16,) * (GEOTOKEN_LEVEL // 2)


def cell_id_to_tokens(cell_id: int) -> tuple[int, ...]:
    """GeoTokens of a cell at any level L: 1 + ceil(L/2) tokens; an odd L's last token is 4·d."""
    ids, levels = checked_cell_ids(cell_id)
    if ids.ndim:
        raise ValueError("cell_id_to_tokens takes one cell id")
    cid, level = int(ids), int(levels)
    digits = [(cid >> (61 - 2 * k)) & 3 for k in range(1, level + 1)]
    if level % 2:
        digits.append(0)
    return (cid >> 61, *(4 * digits[m] + digits[m + 1] for m in range(0, len(digits), 2)))


def tokens_to_cell_id(tokens: Sequence[int], level: int | None = None) -> int:
    """S2 cell id from GeoTokens; level defaults to 2·(len − 1), an odd level must be given."""
    try:
        toks = [operator.index(t) for t in tokens]
    except TypeError as exc:
        raise ValueError(f"tokens must be integers, got {tokens!r}") from exc
    if not toks:
        raise ValueError("tokens must hold at least the face token")
    level = 2 * (len(toks) - 1) if level is None else checked_level(level)
    if level > MAX_LEVEL:
        raise ValueError(f"{len(toks)} tokens exceed level {MAX_LEVEL}")
    if (level + 1) // 2 != len(toks) - 1:
        raise ValueError(f"level {level} needs {1 + (level + 1) // 2} tokens, got {len(toks)}")
    if not 0 <= toks[0] <= 5:
        raise ValueError(f"face token {toks[0]} out of range 0..5")
    pos = 0
    for index, tok in enumerate(toks[1:], start=1):
        if not 0 <= tok <= 15:
            raise ValueError(f"token {index} = {tok} out of range 0..15")
        pos = (pos << 4) | tok
    if level % 2:
        if toks[-1] & 3:
            raise ValueError(f"odd level {level}: last token {toks[-1]} must have a zero low digit")
        pos >>= 2
    shift = 2 * (MAX_LEVEL - level)
    return (toks[0] << 61) | (pos << (shift + 1)) | (1 << shift)

"""The text expert's answer for one photo: the lines read, then the evidence they give.

The service (text/server.py) runs these two steps with a span each; the fitting path
(training/text_outputs.py) caches the lines per photo and recomputes the evidence.
"""

from __future__ import annotations

import numpy as np

from geoloc.text.evidence import TextAnswerer, TextEvidence
from geoloc.text.reading import ReadLine, TextReader


def text_evidence(reader: TextReader, answerer: TextAnswerer, photo) -> tuple[list[ReadLine], TextEvidence]:
    """(the lines read in a decoded photo, the evidence they give)."""
    lines = reader.read(photo)
    return lines, answerer.answer(lines)


def text_points(evidence: TextEvidence, width: int) -> np.ndarray:
    """[width, 4] (lat, lon, weight, radius_km) of the evidence's points, zero-weight padding."""
    out = np.zeros((width, 4))
    for j, p in enumerate(evidence.points[:width]):
        out[j] = (p.lat_deg, p.lon_deg, p.weight, p.radius_km)
    return out

"""The chat messages the model is asked with: the task, the candidates, and the photo.

The photo goes as a JPEG data URL, shrunk to the configured longest side: vision models tile or
resize large images anyway, and every pixel sent is prompt tokens paid for. The candidates are
numbered from 1, as people (and models) count, with their place names and probabilities; the
answer asked for is one JSON object, which answer.py reads.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from PIL import Image

from geoloc.judge.answer import Candidate

JPEG_QUALITY = 85

SYSTEM = (
    "You are an expert in photo geolocation. You look at a photo and say where on Earth it was taken, "
    "reasoning from what it shows: landscape, vegetation, architecture, roads, signs, scripts, vehicles."
)
ANSWER_FORMAT = (
    'Answer with one JSON object and nothing else: {"lat": <degrees>, "lon": <degrees>, '
    '"place": "<city or region, country>", "confidence": <0 to 1>}. '
    'If the photo gives no clue at all, answer {"lat": null, "lon": null, "place": null, "confidence": 0}.'
)
POOL_TASK = (
    "Other experts proposed the places below. Choose the one where the photo was most likely taken, "
    'and give its lat and lon exactly as listed (you may instead give its number as "candidate").'
)
FREE_TASK = (
    "Other experts proposed the places below; they may all be wrong. Use them as hints, and give your own answer."
)
NO_CANDIDATES_TASK = "Where was this photo taken?"


def photo_data_url(photo: Image.Image, max_side: int) -> str:
    """The photo as a base64 JPEG data URL, shrunk (never enlarged) to `max_side` pixels on its longest side."""
    shrunk = photo.copy()
    shrunk.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    shrunk.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def candidate_lines(candidates: Sequence[Candidate]) -> str:
    lines = []
    for number, c in enumerate(candidates, start=1):
        name = " ".join(c.place.split()) or "unnamed place"
        lines.append(f"{number}. {name}: lat {c.lat_deg:.4f}, lon {c.lon_deg:.4f}, probability {c.probability:.3f}")
    return "\n".join(lines)


def task_text(candidates: Sequence[Candidate], pool_selection: bool) -> str:
    """The user message's text: the task for the mode, the candidates, the answer's format."""
    if not candidates:
        return f"{NO_CANDIDATES_TASK}\n\n{ANSWER_FORMAT}"
    task = POOL_TASK if pool_selection else FREE_TASK
    return f"{task}\n\n{candidate_lines(candidates)}\n\n{ANSWER_FORMAT}"


def chat_messages(image_url: str, candidates: Sequence[Candidate], pool_selection: bool) -> list[dict]:
    """The messages of one chat-completions request."""
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": task_text(candidates, pool_selection)},
                {"type": "image_url", "image_url": {"url": image_url}},
            ],
        },
    ]

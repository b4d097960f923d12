"""Reading the model's reply: where it says the photo was taken, that it cannot tell, or why the
reply is unusable.

Models wrap their JSON in prose and Markdown fences, so the first JSON object in the reply that
carries an answer's keys is read, wherever it sits. What is accepted, besides
{"lat": .., "lon": .., "place": .., "confidence": ..}: numbers written as strings, a missing
confidence, and for pool selection the 1-based number of a candidate ({"candidate": 2}, or a
reply that is only that number), as the prompt numbers them. "Cannot tell" is lat and lon both
null, or a reply without JSON that says so in words.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from geoloc.geo.sphere import haversine_km

# A point given in pool selection counts as the nearest candidate within this distance: the
# model copies coordinates back rounded (0.1 degree is about 11 km), but a point farther from
# every candidate is an answer to another question.
POOL_MATCH_KM = 50.0
# Half-mass radii of the answer's kernel at full and at no confidence, interpolated log-linearly
# in between: a city when the model is sure, a continent when it is guessing.
SURE_RADIUS_KM = 25.0
GUESS_RADIUS_KM = 2500.0
_ANSWER_KEYS = {"lat", "lon", "latitude", "longitude", "candidate", "place", "confidence"}
_CANNOT_TELL = re.compile(
    r"\b(can ?not|can't|cannot|unable to|impossible to|not possible to|no way to)\s+"
    r"(tell|determine|say|identify|know|locate|geolocate|pinpoint)\b|\bno idea\b|\bnot enough (information|clues)\b",
    re.IGNORECASE,
)
_BARE_NUMBER = re.compile(r"^\W*(?:candidate\s*#?\s*)?(\d{1,4})\W*$", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    """A place shown to the model, as the request gave it."""

    lat_deg: float
    lon_deg: float
    probability: float
    place: str


@dataclass(frozen=True)
class Answer:
    """Where the model says the photo was taken. `confidence` is None when it stated none;
    `candidate_index` (0-based) is the candidate chosen in pool selection."""

    lat_deg: float
    lon_deg: float
    place: str
    confidence: float | None
    candidate_index: int | None = None

    @property
    def radius_km(self) -> float:
        """The half-mass radius its confidence stands for; 0 (the expert's fitted bandwidth) without one."""
        if self.confidence is None:
            return 0.0
        return GUESS_RADIUS_KM * (SURE_RADIUS_KM / GUESS_RADIUS_KM) ** self.confidence


class UnusableAnswer(ValueError):
    """A reply that is neither an answer nor "cannot tell"; `kind` names the defect for metrics
    and for the response's failure field, the message says what was wrong."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


def parse_answer(reply: str | None, candidates: Sequence[Candidate], pool_selection: bool) -> Answer | None:
    """The answer in the model's `reply`, or None when it cannot tell; raises UnusableAnswer."""
    if reply is None or not reply.strip():
        raise UnusableAnswer("empty", "the reply has no text")
    found = _first_answer_object(reply)
    if found is None:
        bare = _BARE_NUMBER.match(reply.strip())
        if pool_selection and bare:
            return _chosen_candidate(int(bare.group(1)), candidates, place="", confidence=None)
        if _CANNOT_TELL.search(reply):
            return None
        raise UnusableAnswer("no_json", f"no JSON object with an answer in the reply ({len(reply)} characters)")
    lat = _number(found, ("lat", "latitude"))
    lon = _number(found, ("lon", "longitude"))
    place = _text(found.get("place"))
    confidence = _confidence(found.get("confidence"))
    if pool_selection and found.get("candidate") is not None:
        return _chosen_candidate(_index(found["candidate"]), candidates, place, confidence)
    if lat is None and lon is None:
        return None
    if lat is None or lon is None:
        raise UnusableAnswer("missing_field", f"{'lat' if lat is None else 'lon'} is missing or null")
    if not -90 <= lat <= 90:
        raise UnusableAnswer("out_of_range", f"lat {lat:g} is outside [-90, 90]")
    if not -180 <= lon <= 180:
        raise UnusableAnswer("out_of_range", f"lon {lon:g} is outside [-180, 180]")
    if pool_selection:
        return _nearest_candidate(lat, lon, candidates, place, confidence)
    return Answer(lat, lon, place, confidence)


def _first_answer_object(reply: str) -> dict | None:
    """The first JSON object in `reply` holding any of an answer's keys (fences and prose around it
    are skipped over: decoding starts at each '{' in turn)."""
    decoder = json.JSONDecoder()
    start = reply.find("{")
    while start != -1:
        try:
            value, _end = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and _ANSWER_KEYS & {str(k).lower() for k in value}:
            return {str(k).lower(): v for k, v in value.items()}
        start = reply.find("{", start + 1)
    return None


def _number(found: dict, names: tuple[str, ...]) -> float | None:
    for name in names:
        if name not in found or found[name] is None:
            continue
        value = found[name]
        if isinstance(value, bool):
            raise UnusableAnswer("bad_value", f"{name} is {value!r}, not a number")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise UnusableAnswer("bad_value", f"{name} is {value[:40]!r}, not a number") from None
        if not isinstance(value, int | float):
            raise UnusableAnswer("bad_value", f"{name} is a {type(value).__name__}, not a number")
        if not math.isfinite(value):
            raise UnusableAnswer("out_of_range", f"{name} is {value}")
        return float(value)
    return None


def _confidence(value: object) -> float | None:
    confidence = _number({"confidence": value}, ("confidence",))
    if confidence is not None and not 0 <= confidence <= 1:
        raise UnusableAnswer("out_of_range", f"confidence {confidence:g} is outside [0, 1]")
    return confidence


def _text(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _index(value: object) -> int:
    number = _number({"candidate": value}, ("candidate",))
    if number is None or number != int(number):
        raise UnusableAnswer("bad_value", f"candidate is {value!r}, not a candidate's number")
    return int(number)


def _chosen_candidate(number: int, candidates: Sequence[Candidate], place: str, confidence: float | None) -> Answer:
    if not 1 <= number <= len(candidates):
        raise UnusableAnswer("not_a_candidate", f"candidate {number} is not in 1..{len(candidates)}")
    chosen = candidates[number - 1]
    return Answer(chosen.lat_deg, chosen.lon_deg, place or chosen.place, confidence, number - 1)


def _nearest_candidate(
    lat: float, lon: float, candidates: Sequence[Candidate], place: str, confidence: float | None
) -> Answer:
    if not candidates:
        raise UnusableAnswer("not_a_candidate", "pool selection without candidates")
    distances = [float(haversine_km(lat, lon, c.lat_deg, c.lon_deg)) for c in candidates]
    nearest = min(range(len(candidates)), key=distances.__getitem__)
    if distances[nearest] > POOL_MATCH_KM:
        raise UnusableAnswer(
            "not_a_candidate", f"({lat:g}, {lon:g}) is {distances[nearest]:.0f} km from the nearest candidate"
        )
    return _chosen_candidate(nearest + 1, candidates, place, confidence)

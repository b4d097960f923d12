"""From the lines read in a photo to the text expert's answer: weighted points with radii.

Three kinds of evidence, each a likelihood over countries or a list of places:
- the scripts of the letters (scripts.py): P(script | country) from CLDR (places.py);
- the language, from lingua's detector over the kept text: P(text | country) = Σ_language
  P(language | text) · P(language | country), again from CLDR;
- place names (gazetteer.py).
Script and language likelihoods multiply, and the photo prior by country (country_prior.py)
makes them a posterior. A named place weighs its population (big places are named more) times
how well its country fits the rest of the text, times its match's quality, so that "Paris" is
Paris, France unless the text says otherwise.

The answer: `place_share` of the mass on the named places, each with a city-sized radius; the
rest on the posterior's countries, each spread over its largest places with a radius of the
country's size. Without a named place, all of it on the countries; with no evidence at all, no
points, and fusion leaves the expert out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from geoloc.text.country_prior import CountryPrior
from geoloc.text.gazetteer import Gazetteer, PlaceMatch, letters
from geoloc.text.places import countries, language_likelihoods, script_likelihoods
from geoloc.text.reading import ReadLine
from geoloc.text.scripts import script_counts

LIKELIHOOD_FLOOR = 0.02  # of the best country's: a language detector's miss must not veto a named place
MIN_SCRIPT_LETTERS = 2
# A single word names a small place far less often than it is just a word ("Pearl", "Central",
# "Hall"), and a word one letter off a place's name is usually another word ("Hunted", "Office"):
# such matches count only for places at least this big. A name of several words is specific.
MIN_POPULATION = {"several words": 15_000, "one word": 100_000, "one edit": 1_000_000}
# Written far from where they are spoken, if anywhere: Latin on a New York library, Esperanto.
NOT_EVIDENCE_LANGUAGES = frozenset({"la", "eo"})


@dataclass(frozen=True)
class EvidenceSettings:
    min_confidence: float = 0.8  # a line read with less is not used
    min_letters: int = 3  # nor a line with fewer letters
    place_share: float = 0.8  # of the mass, on named places when there are any
    max_places: int = 10
    max_countries: int = 5
    min_country_share: float = 0.01
    language_min_letters: int = 6
    language_min_confidence: float = 0.5  # the detector's top language must be at least this sure


def city_radius_km(population: int) -> float:
    """Half the mass of a "somewhere in this city" guess within this: grows as √population, 5 to 40 km."""
    return float(min(40.0, max(5.0, 0.5 * math.sqrt(population / 1000.0))))


@dataclass(frozen=True)
class Point:
    lat_deg: float
    lon_deg: float
    weight: float
    radius_km: float


@dataclass
class TextEvidence:
    lines: list[ReadLine]  # the lines used
    scripts: dict[str, int] = field(default_factory=dict)  # letters per ISO 15924 script
    language: str = ""  # ISO 639-1 of the detector's top language, when it was used
    language_confidence: float = 0.0
    places: list[tuple[PlaceMatch, float]] = field(default_factory=list)  # with their weights
    countries: dict[str, float] = field(default_factory=dict)  # the posterior
    points: list[Point] = field(default_factory=list)


class LanguageDetector:
    """lingua's detector over the languages that CLDR says some country speaks (so that Latin or
    Esperanto never wins a short sign), preloaded: its first call would otherwise take seconds."""

    def __init__(self, low_accuracy: bool = False):
        from lingua import Language, LanguageDetectorBuilder

        known = language_likelihoods()
        spoken = [lang for lang in Language.all() if lang.iso_code_639_1.name.lower() in known]
        builder = LanguageDetectorBuilder.from_languages(*spoken).with_preloaded_language_models()
        self._detector = (builder.with_low_accuracy_mode() if low_accuracy else builder).build()

    def confidences(self, text: str) -> dict[str, float]:
        """{ISO 639-1: P(language | text)} over the languages that are evidence of a place, summing to 1."""
        values = self._detector.compute_language_confidence_values(text)
        kept = {v.language.iso_code_639_1.name.lower(): float(v.value) for v in values if v.value > 0}
        kept = {language: p for language, p in kept.items() if language not in NOT_EVIDENCE_LANGUAGES}
        total = sum(kept.values())
        return {language: p / total for language, p in kept.items()} if total > 0 else {}


class TextAnswerer:
    def __init__(
        self,
        gazetteer: Gazetteer,
        detector: LanguageDetector,
        prior: CountryPrior,
        settings: EvidenceSettings | None = None,
    ):
        self.gazetteer, self.detector, self.prior = gazetteer, detector, prior
        self.settings = settings or EvidenceSettings()

    def kept(self, lines: list[ReadLine]) -> list[ReadLine]:
        s = self.settings
        return [line for line in lines if line.confidence >= s.min_confidence and letters(line.text) >= s.min_letters]

    def answer(self, lines: list[ReadLine]) -> TextEvidence:
        s = self.settings
        kept = self.kept(lines)
        evidence = TextEvidence(kept)
        if not kept:
            return evidence
        text = " · ".join(line.text for line in kept)
        evidence.scripts = dict(script_counts(text))
        likelihood = self._script_likelihood(evidence.scripts)
        if letters(text) >= s.language_min_letters:
            confidences = self.detector.confidences(text)
            top = max(confidences, key=confidences.get, default="")
            if top and confidences[top] >= s.language_min_confidence:
                evidence.language, evidence.language_confidence = top, confidences[top]
                likelihood = _product(likelihood, _language_likelihood(confidences))
        matches = [m for line in kept for m in self.gazetteer.match(line.text)]
        evidence.places = self._weighed_places(matches, likelihood)
        if likelihood is not None:
            evidence.countries = self.prior.posterior(likelihood)
        elif evidence.places:  # the named places' countries, as a hedge on a wrong namesake
            totals: dict[str, float] = {}
            for match, weight in evidence.places:
                totals[match.city.country] = totals.get(match.city.country, 0.0) + weight
            evidence.countries = totals
        evidence.points = self._points(evidence)
        return evidence

    def _script_likelihood(self, scripts: dict[str, int]) -> dict[str, float] | None:
        seen = {s for s, n in scripts.items() if n >= MIN_SCRIPT_LETTERS and s != "Latn"}
        if seen & {"Hira", "Kana"}:
            seen -= {"Hani"}  # kana settle it: the Han letters are Japanese
        tables = script_likelihoods()
        likelihood = None
        for script in sorted(seen):
            likelihood = _product(likelihood, tables.get(script, {}))
        return likelihood

    def _weighed_places(self, matches: list[PlaceMatch], likelihood) -> list[tuple[PlaceMatch, float]]:
        best: dict[tuple, PlaceMatch] = {}
        for m in filter(specific_enough, matches):
            key = (m.city.name, m.city.country, m.city.lat_deg, m.city.lon_deg)
            if key not in best or m.quality > best[key].quality:
                best[key] = m
        floor = LIKELIHOOD_FLOOR * max(likelihood.values(), default=0.0) if likelihood else 0.0

        def fit(country: str) -> float:
            return max(likelihood.get(country, 0.0), floor) if likelihood else 1.0

        weighed = [(m, m.quality * m.city.population * fit(m.city.country)) for m in best.values()]
        weighed = sorted((w for w in weighed if w[1] > 0), key=lambda w: -w[1])[: self.settings.max_places]
        total = sum(w for _, w in weighed)
        return [(m, w / total) for m, w in weighed]

    def _points(self, evidence: TextEvidence) -> list[Point]:
        s = self.settings
        place_mass = s.place_share if evidence.places else 0.0
        country_mass = 1.0 - place_mass if evidence.countries else 0.0
        if not evidence.countries:
            place_mass = 1.0 if evidence.places else 0.0
        points = [
            Point(m.city.lat_deg, m.city.lon_deg, place_mass * w, city_radius_km(m.city.population))
            for m, w in evidence.places
        ]
        ranked = sorted(evidence.countries.items(), key=lambda kv: -kv[1])[: s.max_countries]
        ranked = [(c, p) for c, p in ranked if p >= s.min_country_share and c in countries()]
        total = sum(p for _, p in ranked)
        for code, share in ranked:
            country = countries()[code]
            people = sum(c.population for c in country.places)
            for city in country.places:
                weight = country_mass * share / total * city.population / people
                points.append(Point(city.lat_deg, city.lon_deg, weight, country.radius_km))
        return points


def specific_enough(match: PlaceMatch) -> bool:
    """Whether the match is likely meant as the place, by how it matched and how big the place is."""
    if match.quality < 1:
        kind = "one edit"
    else:
        kind = "several words" if len(match.text.split()) > 1 else "one word"
    return match.city.population >= MIN_POPULATION[kind]


def _product(a: dict[str, float] | None, b: dict[str, float]) -> dict[str, float]:
    if a is None:
        return dict(b)
    return {c: v * b[c] for c, v in a.items() if c in b}


def _language_likelihood(confidences: dict[str, float]) -> dict[str, float]:
    tables = language_likelihoods()
    out: dict[str, float] = {}
    for language, p in confidences.items():
        for country, share in tables.get(language, {}).items():
            out[country] = out.get(country, 0.0) + p * share
    return out

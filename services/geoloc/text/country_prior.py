"""The prior of where photos are taken, by country: the share of a GPS gallery's photos in each.

Text evidence is a likelihood over countries (places.py); this turns it into a posterior. Fitted
by `geoloc train text` on the GPS gallery's coordinates (never on the Im2GPS3k photos), named
with the same offline country polygons as the orchestrator's places, and shipped as
models/text/country_prior.json with its manifest. Every country gets half a photo more than it
has, so that text in a language of a country the gallery missed still points there.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoloc.artifacts.files import written_atomically
from geoloc.artifacts.versions import content_version
from geoloc.common.paths import MODELS_DIR

SHIPPED_COUNTRY_PRIOR = MODELS_DIR / "text" / "country_prior.json"
PSEUDO_COUNT = 0.5


@dataclass(frozen=True)
class CountryPrior:
    shares: dict[str, float]  # ISO 3166-1 alpha-2: share of photos, summing to 1 over `countries`
    version: str

    def posterior(self, likelihood: dict[str, float]) -> dict[str, float]:
        """P(country | evidence) ∝ P(country) · likelihood; {} when the likelihood is zero everywhere."""
        joint = {c: self.shares.get(c, 0.0) * value for c, value in likelihood.items() if value > 0}
        total = sum(joint.values())
        return {c: v / total for c, v in joint.items()} if total > 0 else {}


def country_counts(lat_deg: np.ndarray, lon_deg: np.ndarray) -> Counter[str]:
    """How many of the points fall in each country (points at sea or on unclaimed land are left out)."""
    from geoloc.places import PlaceNamer

    names = PlaceNamer().names(lat_deg, lon_deg)
    return Counter(n.country_code for n in names if n.kind == "country" and n.country_code)


def fitted_prior(counts: Counter[str], countries: list[str]) -> dict[str, float]:
    raw = {c: counts.get(c, 0) + PSEUDO_COUNT for c in countries}
    total = sum(raw.values())
    return {c: v / total for c, v in sorted(raw.items())}


def save_country_prior(path: Path, shares: dict[str, float], manifest: dict) -> str:
    content = {"shares": {c: round(v, 8) for c, v in shares.items()}}
    version = content_version(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as f:
        f.write((json.dumps({**manifest, "version": version, **content}, indent=1) + "\n").encode())
    return version


def load_country_prior(path: Path = SHIPPED_COUNTRY_PRIOR) -> CountryPrior:
    saved = json.loads(Path(path).read_text())
    version = content_version({"shares": saved["shares"]})
    if version != saved["version"]:
        raise ValueError(f"{path}: its shares do not match its recorded version {saved['version']} (edited by hand?)")
    return CountryPrior({c: float(v) for c, v in saved["shares"].items()}, version)

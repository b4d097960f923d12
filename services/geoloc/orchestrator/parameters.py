"""The fitted fusion, shipped as one JSON file: parameters, the prior's points, and the manifest.

`geoloc train fusion` writes it; the orchestrator loads it at start-up. The prior's points (a
fixed sample of the GPS gallery's coordinates) travel in the file, so the orchestrator needs no
gallery of its own. The version is a prefix of the sha256 of the parameters and points as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoloc.artifacts.files import written_atomically
from geoloc.artifacts.versions import content_version
from geoloc.orchestrator.fusion import FusionParameters, Prior


@dataclass
class FittedFusion:
    parameters: FusionParameters
    prior: Prior
    version: str


def _fitted_content(parameters: FusionParameters, prior: Prior) -> dict:
    points = np.round(np.stack([prior.lat_deg, prior.lon_deg], axis=1), 5).tolist()
    return {"parameters": parameters.to_dict(), "prior": {"bandwidth_km": prior.bandwidth_km, "points": points}}


def save_fusion(path: Path, parameters: FusionParameters, prior: Prior, manifest: dict) -> str:
    """Writes the file (manifest first, for people reading it); returns the version."""
    content = _fitted_content(parameters, prior)
    version = content_version(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as stream:
        stream.write((json.dumps({**manifest, "version": version, **content}, indent=1) + "\n").encode())
    return version


def load_fusion(path: Path) -> FittedFusion:
    saved = json.loads(Path(path).read_text())
    content = {"parameters": saved["parameters"], "prior": saved["prior"]}
    version = content_version(content)
    if version != saved["version"]:
        raise ValueError(
            f"{path}: its parameters do not match its recorded version {saved['version']} (edited by hand?)"
        )
    points = np.array(saved["prior"]["points"], dtype=np.float64)
    prior = Prior(points, float(saved["prior"]["bandwidth_km"]), size=len(points))
    parameters = FusionParameters(**saved["parameters"], version=version)
    return FittedFusion(parameters, prior, version)

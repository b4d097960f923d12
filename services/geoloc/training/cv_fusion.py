"""`geoloc cv --write-fusion`: the fusion and decision refitted on every photo's out-of-fold answers,
written with the CV figures that measured it in its manifest."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np

from geoloc.orchestrator.parameters import save_fusion
from geoloc.training.cross_validation import fit_answer
from geoloc.training.expert_outputs import models_fingerprint


def write_fusion(
    outputs, truth, authors, gallery_coordinates, tables, weighting, figures, requests, path: Path, checkpoints: dict
) -> None:
    """The fusion and decision fitted on every photo's out-of-fold answers, written to `path` with the CV
    figures; it records the fingerprint of the expert `checkpoints` it was fitted for, where they exist."""
    params, prior, _, chosen = fit_answer(
        outputs, truth, authors, np.arange(len(truth)), gallery_coordinates, weighting, tables
    )
    summary_of = figures["chosen"]["summary"]
    manifest = {
        "what": "the orchestrator's fusion and decision: expert weights, kernel bandwidths, prior, uniform floor",
        "data": {
            "fitted_on": f"out-of-fold expert answers to all {figures['photos']} {figures['data']} photos",
            "prior": f"{len(prior.lat_deg)} points sampled (seed 0) from the GPS gallery",
        },
        "experts": {
            "requests": requests.__dict__,
            "shipped_models_fingerprint": (
                models_fingerprint(checkpoints) if all(p.is_file() for p in checkpoints.values()) else None
            ),
        },
        "command": shlex.join(["geoloc", *sys.argv[1:]]),
        "photo_weighting": weighting,
        "fitted": chosen,
        "cv": {
            "what": figures["what"],
            "fold_sizes": figures["fold_sizes"],
            "answers": summary_of["answers"],
            "coverage": summary_of["coverage"],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    version = save_fusion(path, params, prior, manifest)
    print(f"fusion written to {path} (version {version})")

"""`geoloc cv`'s run, step by step: the photos and their folds, every expert's out-of-fold answers
(and those of the experts that read the photos), the folds scored under each photo weighting, the
figures written, and with --ship or --write-fusion the experts and the fusion that ship.
training/cv_cli.py parses and checks the options and hands them here."""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoloc import experts as registry
from geoloc.artifacts.files import written_atomically
from geoloc.evaluation.folds import photographer_folds
from geoloc.experts import PHOTO_EXPERTS, TRAINED_EXPERTS
from geoloc.gallery.build import default_gallery_csv, read_gps_csv
from geoloc.training.cross_validation import CONSTANT_PLACE, FoldResult, score_fold, table_cache, top_points
from geoloc.training.cv_data import cv_photo_paths, cv_photos, written_models
from geoloc.training.cv_fusion import write_fusion
from geoloc.training.cv_pool import scored_folds
from geoloc.training.cv_reports import (
    add_on_comparison,
    coverage_lines,
    fold_dict,
    fold_line,
    markdown_table,
    standing,
    summarise_folds,
)
from geoloc.training.expert_outputs import ExpertRequests
from geoloc.training.features import default_cache_dir
from geoloc.training.out_of_fold import FoldBudget, out_of_fold_outputs


@dataclass(frozen=True)
class FoldInputs:
    """What scoring a fold reads: every photo's out-of-fold answers, truth and photographer, the
    folds, the GPS gallery, the decision tables' cache, the experts' top points, and the groups of
    photos reported apart (with and without text; None without the text expert)."""

    outputs: dict[str, np.ndarray]
    truth: np.ndarray
    authors: list[str]
    folds: np.ndarray
    gallery_coordinates: np.ndarray
    tables: Callable
    tops: dict[str, np.ndarray]
    groups: dict[str, np.ndarray] | None

    def score(self, fold: int, weighting: str, calibrate: bool) -> FoldResult:
        return score_fold(
            fold,
            self.folds,
            self.outputs,
            self.truth,
            self.authors,
            self.gallery_coordinates,
            weighting,
            self.tables,
            self.tops,
            calibrate,
            self.groups,
        )


def run_cv(
    args: argparse.Namespace, budget: FoldBudget, configs: dict[str, dict], compared: Sequence[str], out: Path
) -> int:
    """The whole run, with options cv_cli has checked: `compared` are the photo weightings compared
    (unless --weighting names one), `out` where the figures go."""
    started = time.monotonic()
    features, truth, authors, what = cv_photos(args)
    folds = photographer_folds(authors, args.folds)
    print(f"{len(authors)} photos by {len(set(authors))} photographers in {args.folds} folds: {np.bincount(folds)}")
    requests = ExpertRequests(**dict(args.ask))
    left_out = sorted({*args.leave_out, *(PHOTO_EXPERTS if args.no_text else ())})
    outputs = out_of_fold_answers(args, features, truth, authors, folds, budget, requests, configs, left_out)
    print(f"out-of-fold answers ready ({time.monotonic() - started:.0f} s)")
    # The experts that read the photos (the text expert) need their pixels: none with --features.
    add_ons = [] if args.features else [e for e in PHOTO_EXPERTS if e not in left_out]
    groups = add_photo_answers(args, outputs, add_ons, started) if add_ons else None
    gallery_coordinates, _ = read_gps_csv(default_gallery_csv())
    tables = table_cache(outputs, truth, gallery_coordinates)
    inputs = FoldInputs(outputs, truth, authors, folds, gallery_coordinates, tables, top_points(outputs), groups)

    by_weighting, chosen, calibrated = compare_and_calibrate(inputs, args, [] if args.weighting else compared, started)
    compared_with = dict.fromkeys(PHOTO_EXPERTS)  # with and without each add-on (None: it was left out)
    for expert in add_ons:
        compared_with[expert] = add_on_comparison(calibrated["summary"]["answers"], groups, expert)
        with_it = compared_with[expert][f"photos_with_{expert}"]
        print(
            f"with and without the {expert} expert ({with_it} photos with {expert}):\n{compared_with[expert]['table']}"
        )
    figures = {
        "what": f"photographer-grouped {args.folds}-fold cross-validation over {what}",
        "data": what,
        "photos": len(authors),
        "photographers": len(set(authors)),
        "fold_sizes": np.bincount(folds).tolist(),
        "constant": list(CONSTANT_PLACE),
        "expert_requests": requests.__dict__,
        "fold_budget": budget.__dict__,
        "expert_configs": configs,  # changed from the shipped configurations (--expert-config)
        "left_out": left_out,  # neither trained nor fitted (--leave-out; --no-text: the experts that read photos)
        "chosen_weighting": chosen,
        "weighting_chosen_by": "this CV (weightings_compared)" if by_weighting else "--weighting",
        "weightings_compared": {w: f["summary"]["answers"]["fused"] for w, f in by_weighting.items()},
        "chosen": calibrated,
        **compared_with,
        "seconds": round(time.monotonic() - started),
    }
    write_figures(figures, out)
    checkpoints, fusion = written_models(args)
    if args.ship:
        ship(args, features, truth, authors, budget, figures, checkpoints, configs)
    if args.write_fusion or args.ship:  # after the experts: the fusion records which ones it was fitted for
        fitted_on = (outputs, truth, authors, gallery_coordinates, tables)
        write_fusion(*fitted_on, chosen, figures, requests, fusion, checkpoints)
    return 0


def out_of_fold_answers(args, features, truth, authors, folds, budget, requests, configs, left_out) -> dict:
    """Every expert not left out, trained per fold without it (cached), answering each photo."""
    return out_of_fold_outputs(
        features,
        truth,
        authors,
        folds,
        budget,
        requests,
        default_cache_dir(),
        seed=args.seed,
        configs=configs,
        experts=[e for e in TRAINED_EXPERTS if e not in left_out],
    )


def add_photo_answers(
    args: argparse.Namespace, outputs: dict, experts: Sequence[str], started: float
) -> dict[str, np.ndarray]:
    """The answers of the experts that read the photos (the text expert: it trains on none, and its
    read is cached) added to `outputs`; for each, the groups of photos it answered and did not
    ("with text", "without text"), reported apart."""
    groups, paths = {}, cv_photo_paths(args)
    for expert in experts:
        answers_of = registry.expert(expert).photo_answers_function()
        outputs[expert] = answers_of(paths, default_cache_dir())
        answered = outputs[expert][:, :, 2].max(axis=1) > 0
        print(
            f"{expert} answers ready: {answered.sum()} of {len(answered)} photos ({time.monotonic() - started:.0f} s)"
        )
        groups.update({f"with {expert}": answered, f"without {expert}": ~answered})
    return groups


def cross_validate(inputs: FoldInputs, weighting: str, calibrate: bool, k: int, jobs: int, started: float) -> dict:
    """Every fold scored under `weighting` (in `jobs` processes), printed as each finishes: the
    summary over the folds and each fold's figures."""
    results = []
    score = functools.partial(inputs.score, weighting=weighting, calibrate=calibrate)
    for result in scored_folds(score, k, jobs):
        results.append(result)
        # Folds finish minutes apart: show each as it does, also into a file.
        print(fold_line(weighting, result, time.monotonic() - started), flush=True)
    results.sort(key=lambda r: r.fold)
    return {"summary": summarise_folds(results), "folds": [fold_dict(r) for r in results]}


def compare_and_calibrate(
    inputs: FoldInputs, args: argparse.Namespace, compared: Sequence[str], started: float
) -> tuple[dict, str, dict]:
    """The weightings `compared` on the best guess alone, the best of them (or --weighting) chosen,
    and the radii calibrated under it: (each compared weighting's figures, the chosen, its figures)."""
    by_weighting = {w: cross_validate(inputs, w, False, args.folds, args.jobs, started) for w in compared}
    for weighting, figures in by_weighting.items():
        print(f"photo weighting {weighting}:\n{markdown_table(figures['summary']['answers'])}")
    chosen = args.weighting or max(by_weighting, key=lambda w: standing(by_weighting[w]["summary"]["answers"]))
    print(f"calibrating the radii under the {chosen!r} weighting")
    calibrated = cross_validate(inputs, chosen, True, args.folds, args.jobs, started)
    print(markdown_table(calibrated["summary"]["answers"]))
    for line in coverage_lines(calibrated["summary"]["coverage"]):
        print(line)
    return by_weighting, chosen, calibrated


def write_figures(figures: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(out) as stream:  # shipped in models/fusion/: whole or not at all
        stream.write((json.dumps(figures, indent=1) + "\n").encode())
    print(
        f"figures written to {out}; the fit is weighted by {figures['chosen_weighting']!r} "
        f"({figures['seconds']} s in all)"
    )


def ship(args, features, truth, authors, budget, figures, checkpoints, configs) -> None:
    """--ship: the shipped experts retrained on all the photos by the folds' own procedure."""
    from geoloc.gallery.location_encoder import LocationEncoder
    from geoloc.gallery.retrieval import loaded_gallery
    from geoloc.training.shipped_experts import ship_experts

    command = shlex.join(["geoloc", *sys.argv[1:]])
    ship_experts(
        features,
        truth,
        authors,
        budget,
        figures,
        command,
        loaded_gallery(),
        LocationEncoder.pretrained(),
        args.seed,
        paths=checkpoints,
        configs=configs,
    )

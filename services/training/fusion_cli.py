"""`geoloc train fusion`: fit the fusion's expert weights, bandwidths and gallery-density power on val.

Computes (once, cached) every expert's answer for every Im2GPS3k val photo as the orchestrator
asks for it, fits the fusion (training/fusion.py), and checks its calibration: the share of val photos whose
true place lies within the answer's 50 % and 90 % radii, with all experts, with each expert alone,
and with none (the prior). Because the fit and the check use the same photos, it also reports a
2-fold cross-validated check (fit on one half, score the other). Writes models/fusion/fusion.json.
"""

from __future__ import annotations

import argparse
import time

from geoloc.training.arguments import add_data_arguments


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("fusion", help="fit the orchestrator's fusion on val", description=__doc__)
    add_data_arguments(parser, "models/fusion/fusion.json")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from geoloc.api import EXPERTS
    from geoloc.evaluation.dataset import im2gps3k_split
    from geoloc.gallery.build import default_gallery_csv, read_gps_csv
    from geoloc.orchestrator.config import SHIPPED_FUSION
    from geoloc.orchestrator.parameters import save_fusion
    from geoloc.training.expert_outputs import ExpertRequests, cached_expert_outputs, models_fingerprint
    from geoloc.training.features import default_cache_dir, split_features
    from geoloc.training.fusion import calibrate, calibration, fit_fusion
    from geoloc.training.manifest import command_line

    started = time.monotonic()
    out = args.out or SHIPPED_FUSION
    val = im2gps3k_split("val", args.data)
    truth = np.array([(i.lat, i.lon) for i in val.images])
    requests = ExpertRequests()
    print(f"every expert's answer for the {len(val)} val photos ({requests})")
    outputs = cached_expert_outputs(split_features(val), requests, default_cache_dir(), "val")
    gallery_coordinates, _ = read_gps_csv(default_gallery_csv())
    fit = fit_fusion(outputs, truth, gallery_coordinates)
    print(
        f"fitted by likelihood: weights {fit.parameters.weights}, bandwidths km {fit.parameters.bandwidth_km}, "
        f"gallery density power {fit.parameters.gallery_density_power}"
    )
    print(f"mean val log-likelihood (nats/sr): {fit.mean_log_likelihood}")
    print("calibrating the 90 % radius")
    params, floors = calibrate(outputs, truth, fit, np.arange(len(truth)))
    prior = fit.prior
    print(f"shipped: uniform floor {params.uniform_weight}")

    checks = {}
    # Each expert alone on a fixed third of the photos: 0.4 s a photo makes the whole split slow on 2 cores.
    subset = np.sort(np.random.default_rng(1).permutation(len(truth))[: len(truth) // 3])
    cases = [
        ("all experts", None, None),
        *((f"{e} alone", [e], subset) for e in EXPERTS),
        ("no expert (prior)", [], None),
    ]
    for label, experts, rows in cases:
        checks[label] = calibration(outputs, truth, params, prior, rows=rows, experts=experts)
        c = checks[label]
        print(
            f"  {label}: 90 % radius holds {c.coverage_90:.1%}, 50 % holds {c.coverage_50:.1%}; "
            f"median r90 {c.median_radius_90_km:.0f} km; best guess GeoScore {c.best_guess.geoscore:.1f}"
        )
    order = np.random.default_rng(0).permutation(len(truth))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    held_out = []
    for fit_rows, score_rows in (halves, halves[::-1]):
        half = fit_fusion({e: a[fit_rows] for e, a in outputs.items()}, truth[fit_rows], gallery_coordinates)
        # calibrate() takes row indices into what it is given: the fitting half, re-indexed from 0.
        half_params, _ = calibrate(
            {e: a[fit_rows] for e, a in outputs.items()},
            truth[fit_rows],
            half,
            np.arange(len(fit_rows)),
            log=lambda _: None,
        )
        held_out.append(calibration(outputs, truth, half_params, half.prior, rows=score_rows))
    cv_90 = float(np.mean([c.coverage_90 for c in held_out]))
    cv_50 = float(np.mean([c.coverage_50 for c in held_out]))
    print(f"  2-fold cross-validated: 90 % radius holds {cv_90:.1%}, 50 % holds {cv_50:.1%}")

    manifest = {
        "what": "the orchestrator's fusion: expert weights, kernel bandwidths, gallery-density power, prior points",
        "data": {
            "val": f"{val.root} ({len(val)} photos)",
            "prior": f"{len(prior.lat_deg)} points sampled (seed 0) from the GPS gallery {default_gallery_csv().name}",
        },
        "experts": {"requests": requests.__dict__, "models_fingerprint": models_fingerprint()},
        "command": command_line("fusion"),
        "val_mean_log_likelihood": fit.mean_log_likelihood,
        "likelihood_fit": fit.parameters.to_dict(),
        "calibration_search": [{"uniform_weight": w, **c.to_dict()} for w, c in floors],
        "val_calibration": {label: c.to_dict() for label, c in checks.items()},
        "val_calibration_2fold": {"coverage_90": cv_90, "coverage_50": cv_50, "folds": [c.to_dict() for c in held_out]},
        "fit_seconds": round(time.monotonic() - started, 1),
    }
    version = save_fusion(out, params, prior, manifest)
    print(f"fusion written to {out} (version {version}); {manifest['fit_seconds']:.0f} s in all")
    return 0

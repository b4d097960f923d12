"""`geoloc train sampler --method flow|sh`: train a sampler on backbone features, choose it on val.

Trains each configuration of the method's small grid on the Im2GPS3k train split's features
(computed once and cached), keeps each run's best step by val GeoScore, picks the best run, then
the guidance, both on val. Writes the checkpoint and a manifest beside it: sha256, data, command,
choices and val figures next to the prior baseline's. `--features` trains on a larger feature
set instead (an .npz with `features` [n, d] and `latlon` [n, 2], or a folder of feature shards
from `geoloc features`, whose backbone then embeds val too), made on a GPU for example;
`--device cuda` trains there.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from geoloc.training.arguments import add_training_arguments, data_parallel, lead_print, training_data

# Each method's grid, small enough that the whole command stays under 20 minutes on 2 CPU cores.
GRIDS = {
    "flow": [
        {"network": {"width": 256, "depth": 6}, "feature_dropout": 0.0, "steps": 3000},
        {"network": {"width": 256, "depth": 6}, "feature_dropout": 0.5, "steps": 3000},
    ],
    "sh": [
        {"network": {"degree": 16, "width": 512, "depth": 4}, "feature_dropout": 0.5, "steps": 1500},
    ],
}
SELECTION = {"eval_samples": 32, "eval_steps": 16}  # per val photo, while training
# For the guidance choice and the reported figures; SH's denoiser and decoding cost about three
# times the flow's per sample, so it is scored on fewer samples to stay within the time budget.
FINAL = {"flow": {"n_samples": 128, "steps": 32}, "sh": {"n_samples": 64, "steps": 16}}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sampler", help="train the sampler expert (flow matching or SH diffusion)", description=__doc__
    )
    parser.add_argument("--method", choices=sorted(GRIDS), required=True)
    add_training_arguments(parser, "models/sampler/METHOD.pt")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    with data_parallel(args) as (shards, parallel):
        return train(args, shards, parallel)


def train(args: argparse.Namespace, shards, parallel: dict | None) -> int:
    """The grid, the choice and the files; under torchrun every rank trains, the first one reports and writes."""
    from geoloc.evaluation.harness import evaluate
    from geoloc.evaluation.prior import PriorPredictions
    from geoloc.sampler.model import SHIPPED_SAMPLERS, save_sampler
    from geoloc.training.manifest import model_manifest, write_manifest
    from geoloc.training.sampler import SamplerTrainConfig, choose_guidance, train_sampler

    say = lead_print(shards)
    started = time.monotonic()
    out = args.out or SHIPPED_SAMPLERS / f"{args.method}.pt"
    data = training_data(args)
    say(f"training the {args.method} sampler on {data.train_source}; choosing on {len(data.val)} val photos")

    runs = []
    for choice in GRIDS[args.method]:
        choice = {**choice, **({"steps": args.steps} if args.steps else {})}
        config = SamplerTrainConfig(method=args.method, eval_every=max(choice["steps"] // 6, 1), **SELECTION, **choice)
        say(f"config {choice}")
        runs.append(
            train_sampler(
                data.train_features,
                data.train_places,
                data.val_features,
                data.val_places,
                config,
                backbone=data.backbone,
                seed=args.seed,
                device=args.device,
                log=say,
                shards=shards,
            )
        )
        say(f"  kept step {runs[-1].best_step} ({runs[-1].seconds:.0f} s)")
    if shards is not None and not shards.leads:
        return 0  # every rank trained alike; the first one chooses, scores and writes
    best = max(runs, key=lambda r: r.val.geoscore)
    final = FINAL[args.method]
    say(f"choosing the guidance on val with {final['n_samples']} samples and {final['steps']} steps")
    by_guidance = choose_guidance(best.sampler, data.val_features, data.val_places, seed=args.seed, **final)
    for guidance, metrics in by_guidance.items():
        say(f"  guidance {guidance}: GeoScore {metrics.geoscore:.1f}, median {metrics.median_km:.0f} km")
    sha = save_sampler(out, best.sampler)
    chosen = by_guidance[best.sampler.default_guidance]
    prior = evaluate(data.val, PriorPredictions(data.train), progress=False)
    manifest = model_manifest(
        "sampler",
        out,
        sha,
        data.sources(),
        started,
        backbone=data.backbone_description,
        **({"data_parallel": parallel} if parallel else {}),
        method=args.method,
        chosen={**asdict(best.config), "best_step": best.best_step, "guidance": best.sampler.default_guidance},
        val_protocol=f"top mode of {final['n_samples']} samples, {final['steps']} steps, seed {args.seed}",
        val_top1=chosen.to_dict(),
        val_by_guidance={str(g): m.to_dict() for g, m in by_guidance.items()},
        val_prior_baseline=prior.metrics.to_dict(),
        compared_on_val=[
            {**asdict(r.config), "best_step": r.best_step, "val_geoscore": r.val.geoscore, "history": r.history}
            for r in runs
        ],
    )
    manifest_path = write_manifest(out, manifest)
    say(
        f"sampler written to {out} (sha256 {sha[:12]}), manifest {manifest_path}; "
        f"{manifest['train_seconds']:.0f} s in all"
    )
    return 0

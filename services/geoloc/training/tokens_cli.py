"""`geoloc train tokens`: train the token decoder on backbone features, choose it on val.

Trains each configuration of a small grid on the Im2GPS3k train split's features (computed once
and cached), conditioned on the gallery expert's top neighbours of each photo where the
configuration asks for them, keeps each run's best step by val greedy GeoScore, and keeps the best
run. It then scores every strategy on val (greedy, beam search, sampling; with and without
neighbours) and writes the checkpoint and a manifest beside it: sha256, data, command, choices and
val figures next to the prior baseline's. `--features` trains on a larger feature set (an .npz with
`features` [n, d] and `latlon` [n, 2], or a folder of feature shards from `geoloc features`, whose
backbone then embeds val too), made on a GPU for example; `--device cuda` trains there.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from geoloc.training.arguments import add_training_arguments, data_parallel, lead_print, training_data

NEIGHBOURS = 15  # GeoToken's count of retrieved neighbours
# Small enough that the whole command stays under 20 minutes on 2 CPU cores.
GRID = [
    {"network": {"width": 256, "depth": 4, "neighbours": 0}, "steps": 400},
    {"network": {"width": 256, "depth": 4, "neighbours": NEIGHBOURS}, "steps": 400},
]
COMMON = {"eval_every": 50, "feature_dropout": 0.5}
STRATEGIES = {"greedy": {}, "beam 5": {"beam_width": 5}, "sample 30 at 0.7": {"n_samples": 30, "temperature": 0.7}}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("tokens", help="train the token expert (GeoToken decoder)", description=__doc__)
    add_training_arguments(parser, "models/tokens/decoder.pt")
    parser.add_argument(
        "--head",
        type=Path,
        metavar="PATH.pt",
        help="the gallery head whose top points over the default 100K gallery are the neighbours of the grid's "
        "neighbour-conditioned configuration; it must take the features' backbone (default: the shipped head, "
        "the default backbone's)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    with data_parallel(args) as (shards, parallel):
        return train(args, shards, parallel)


def train(args: argparse.Namespace, shards, parallel: dict | None) -> int:
    """The grid, the choice and the files; under torchrun every rank trains, the first one reports and writes."""
    from geoloc.evaluation.csvio import InputError
    from geoloc.evaluation.harness import evaluate
    from geoloc.evaluation.prior import PriorPredictions
    from geoloc.gallery.heads import SHIPPED_HEAD, load_head
    from geoloc.tokens.model import SHIPPED_TOKENS, TokenModel, load_token_model, save_token_model
    from geoloc.training.expert_outputs import gallery_neighbours
    from geoloc.training.manifest import model_manifest, write_manifest
    from geoloc.training.token_decoder import TokenTrainConfig, strategy_metrics, train_decoder

    say = lead_print(shards)
    started = time.monotonic()
    out = args.out or SHIPPED_TOKENS / "decoder.pt"
    data = training_data(args)
    say(f"training the token decoder on {data.train_source}; choosing on {len(data.val)} val photos")
    head = args.head or SHIPPED_HEAD
    head_backbone = load_head(head).backbone
    if head_backbone != data.backbone:
        raise InputError(
            f"{head} takes {head_backbone} features, not the {data.backbone} ones trained on here: "
            "give --head a gallery head of this backbone (geoloc train gallery) for the neighbours"
        )
    say(f"the gallery expert's top {NEIGHBOURS} points of every photo ({head}), as neighbours")
    train_neighbours = gallery_neighbours(data.train_features, NEIGHBOURS, head)
    val_neighbours = gallery_neighbours(data.val_features, NEIGHBOURS, head)

    runs = []
    for choice in GRID:
        choice = {**COMMON, **choice, **({"steps": args.steps} if args.steps else {})}
        with_neighbours = choice["network"]["neighbours"] > 0
        say(f"config {choice}")
        runs.append(
            train_decoder(
                data.train_features,
                data.train_places,
                data.val_features,
                data.val_places,
                TokenTrainConfig(**choice),
                train_neighbours if with_neighbours else None,
                val_neighbours if with_neighbours else None,
                seed=args.seed,
                device=args.device,
                log=say,
                shards=shards,
            )
        )
        kept = runs[-1]
        say(f"  kept step {kept.best_step}: val greedy GeoScore {kept.val.geoscore:.1f} ({kept.seconds:.0f} s)")
    if shards is not None and not shards.leads:
        return 0  # every rank trained alike; the first one chooses, scores and writes
    best = max(runs, key=lambda r: r.val.geoscore)
    model = TokenModel(best.decoder, best.standardiser, backbone=data.backbone)
    sha = save_token_model(out, model)

    shipped = load_token_model(out, args.device)  # the reported figures are of the stored (half-precision) weights
    neighbour_cases = (
        {"with neighbours": val_neighbours, "without neighbours": None} if shipped.neighbour_slots else {"": None}
    )
    by_strategy = {}
    for case, neighbours in neighbour_cases.items():
        for name, options in STRATEGIES.items():
            label = f"{name} {case}".strip()
            strategy = name.split()[0]
            by_strategy[label] = strategy_metrics(
                shipped, data.val_features, data.val_places, strategy, neighbours, seed=args.seed, **options
            )
            say(f"  {label}: GeoScore {by_strategy[label].geoscore:.1f}, median {by_strategy[label].median_km:.0f} km")
    prior = evaluate(data.val, PriorPredictions(data.train), progress=False)
    headline = next(iter(by_strategy))  # greedy (with neighbours, when the decoder has them): the selection rule
    manifest = model_manifest(
        "tokens",
        out,
        sha,
        data.sources(),
        started,
        backbone=data.backbone_description,
        **({"data_parallel": parallel} if parallel else {}),
        neighbours={
            "count": shipped.neighbour_slots,
            "source": f"the gallery head {head} on the default GeoCLIP 100K gallery, top points",
        },
        chosen={**asdict(best.config), "best_step": best.best_step},
        val_protocol=f"the most probable cell's centre as the one guess per photo, seed {args.seed}",
        val_top1=by_strategy[headline].to_dict(),
        val_by_strategy={label: m.to_dict() for label, m in by_strategy.items()},
        val_prior_baseline=prior.metrics.to_dict(),
        compared_on_val=[
            {
                **asdict(r.config),
                "best_step": r.best_step,
                "val_greedy_geoscore": r.val.geoscore,
                "history": r.history,
                "seconds": round(r.seconds, 1),
            }
            for r in runs
        ],
    )
    manifest_path = write_manifest(out, manifest)
    say(
        f"token decoder written to {out} (sha256 {sha[:12]}), manifest {manifest_path}; "
        f"{manifest['train_seconds']:.0f} s in all"
    )
    return 0

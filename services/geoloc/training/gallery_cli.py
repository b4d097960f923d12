"""`geoloc train gallery`: the EfficientNet-Lite2 -> GeoCLIP head, trained on train, chosen on val.

`--features DIR` trains it on a folder of feature shards instead (`geoloc features`: another
backbone's, say), the folder's model then embedding val too.

Writes the head checkpoint and, beside it, a manifest: its sha256, the data and command that
made it, the configuration chosen, and the val figures next to the prior baseline's.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from geoloc.training.arguments import add_training_arguments, data_parallel, lead_print, training_data


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("gallery", help="train the gallery expert's image head", description=__doc__)
    add_training_arguments(parser, "models/gallery/efficientnet_lite2_head.pt", on_features=False)
    parser.add_argument(
        "--gallery",
        type=Path,
        metavar="DIR",
        help="built GPS gallery used for negatives and val (built if absent; "
        "default: artifacts/gallery/geoclip_100k in the checkout)",
    )
    parser.add_argument("--epochs", type=int, default=40, help="per configuration (default: %(default)s)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    with data_parallel(args) as (shards, parallel):
        return train(args, shards, parallel)


def train(args: argparse.Namespace, shards, parallel: dict | None) -> int:
    """The grid, the choice and the files; under torchrun every rank trains, the first one reports and writes."""
    from geoloc.evaluation.harness import evaluate
    from geoloc.evaluation.prior import PriorPredictions
    from geoloc.gallery.build import DEFAULT_GALLERY_DIR, build_gallery, default_gallery_csv
    from geoloc.gallery.heads import SHIPPED_HEADS, save_head
    from geoloc.gallery.index import GalleryIndex
    from geoloc.gallery.location_encoder import LocationEncoder
    from geoloc.training.gallery_head import config_grid, train_head
    from geoloc.training.manifest import model_manifest, write_manifest

    say = lead_print(shards)
    started = time.monotonic()
    args.gallery = args.gallery or DEFAULT_GALLERY_DIR
    args.out = args.out or SHIPPED_HEADS / "efficientnet_lite2_head.pt"
    data = training_data(args)
    say(f"training the gallery head on {data.train_source}; choosing on {len(data.val)} val photos")
    if not (args.gallery / "manifest.json").exists() and (shards is None or shards.leads):
        say(f"building the GPS gallery in {args.gallery}")
        build_gallery(default_gallery_csv(), args.gallery)
    if shards is not None and shards.distributed:
        import torch.distributed as dist

        dist.barrier()  # the others wait for the first rank's gallery
    gallery = GalleryIndex.load(args.gallery)
    if not gallery.exact:
        say("geoloc train gallery: the training gallery must be a flat (exact) index", file=sys.stderr)
        return 2
    encoder = LocationEncoder.pretrained()

    results = []
    for config in config_grid():
        config = type(config)(**{**asdict(config), "epochs": args.epochs})
        say(f"config {asdict(config)}")
        trained = train_head(
            data.train_features,
            data.train_places,
            data.val_features,
            data.val_places,
            gallery.vectors(),
            gallery.coordinates,
            encoder,
            config,
            seed=args.seed,
            log=lambda line: None,
            shards=shards,
        )
        say(
            f"  best epoch {trained.best_epoch}: val GeoScore {trained.val.geoscore:.1f}, "
            f"median {trained.val.median_km:.0f} km"
        )
        results.append(trained)
    if shards is not None and not shards.leads:
        return 0  # every rank trained alike; the first one writes
    best = max(results, key=lambda r: r.val.geoscore)
    sha = save_head(args.out, best.mlp, best.logit_scale, data.backbone)
    prior = evaluate(data.val, PriorPredictions(data.train), progress=False)
    manifest = model_manifest(
        "gallery",
        args.out,
        sha,
        data.sources(),
        started,
        backbone=data.backbone_description,
        **({"data_parallel": parallel} if parallel else {}),
        gallery={"path": str(args.gallery), "count": gallery.manifest.count, "sources": gallery.manifest.sources},
        location_encoder_sha256=gallery.manifest.encoder_sha256,
        chosen={**asdict(best.config), "best_epoch": best.best_epoch, "logit_scale": best.logit_scale},
        val_top1=best.val.to_dict(),
        val_prior_baseline=prior.metrics.to_dict(),
        compared_on_val=[
            {**asdict(r.config), "best_epoch": r.best_epoch, "val_geoscore": r.val.geoscore} for r in results
        ],
    )
    manifest_path = write_manifest(args.out, manifest)
    say(f"head written to {args.out} (sha256 {sha[:12]}), manifest {manifest_path}")
    return 0

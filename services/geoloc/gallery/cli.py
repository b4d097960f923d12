"""`geoloc gallery build|add`: embed a GPS gallery once and index it with FAISS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("gallery", help="build or extend a GPS gallery index", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="embed a GPS CSV and write a FAISS index with its manifest")
    build.add_argument(
        "--gps",
        type=Path,
        metavar="CSV",
        help="lat,lon[,label] rows under a header (default: the geoclip package's 100K MP-16 coordinates)",
    )
    build.add_argument("--out", type=Path, default=None, metavar="DIR", help="(default: %(default)s)")
    build.add_argument(
        "--index",
        choices=("auto", "flat", "hnsw", "ivfsq8"),
        default="auto",
        help="auto: exact up to 1M points, IVF-SQ8 beyond (default: %(default)s)",
    )
    build.set_defaults(func=run_build)
    add = actions.add_parser("add", help="embed a GPS CSV and add it to a built gallery")
    add.add_argument(
        "--gallery",
        type=Path,
        default=None,
        metavar="DIR",
        help="(default: artifacts/gallery/geoclip_100k in the checkout)",
    )
    add.add_argument("--gps", type=Path, required=True, metavar="CSV")
    add.set_defaults(func=run_add)
    return parser


def run_build(args: argparse.Namespace) -> int:
    from geoloc.gallery.build import DEFAULT_GALLERY_DIR, build_gallery, default_gallery_csv

    args.out = args.out or DEFAULT_GALLERY_DIR
    try:
        gallery = build_gallery(args.gps or default_gallery_csv(), args.out, args.index)
    except (OSError, ValueError) as exc:
        print(f"geoloc gallery build: error: {exc}", file=sys.stderr)
        return 2
    m = gallery.manifest
    print(f"gallery of {m.count} points ({m.dimension}-d, {m.index_type} index) written to {args.out}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from geoloc.gallery.build import DEFAULT_GALLERY_DIR, add_to_gallery

    args.gallery = args.gallery or DEFAULT_GALLERY_DIR
    try:
        gallery = add_to_gallery(args.gallery, args.gps)
    except (OSError, ValueError) as exc:
        print(f"geoloc gallery add: error: {exc}", file=sys.stderr)
        return 2
    print(f"gallery in {args.gallery} now holds {gallery.manifest.count} points")
    return 0

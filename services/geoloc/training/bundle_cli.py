"""`geoloc bundle build|verify`: one versioned folder per backbone with the Triton model, every
expert and the fusion (training/bundle.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoloc.common.paths import MODEL_REPOSITORY, MODELS_DIR
from geoloc.training.arguments import DEFAULT_MODEL


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bundle", help="build or verify a model bundle", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="assemble a bundle from a model repository and a models folder")
    build.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new folder for the bundle")
    build.add_argument("--model", default=DEFAULT_MODEL, help=f"the Triton model (default: {DEFAULT_MODEL})")
    build.add_argument(
        "--repository", type=Path, default=MODEL_REPOSITORY, metavar="DIR", help="(default: %(default)s)"
    )
    build.add_argument(
        "--models", type=Path, default=MODELS_DIR, metavar="DIR", help="the experts and fusion (default: %(default)s)"
    )
    build.set_defaults(func=run_build)
    verify = actions.add_parser("verify", help="check a bundle's files, backbone and experts")
    verify.add_argument("bundle", type=Path, metavar="DIR")
    verify.set_defaults(func=run_verify)


def run_build(args: argparse.Namespace) -> int:
    from geoloc.training.bundle import build_bundle

    bundle = build_bundle(args.out, args.model, args.repository, args.models)
    backbone = bundle["backbone"]
    print(
        f"bundle {bundle['version']} in {args.out}: {backbone['name']} ({backbone['dimension']}-d), "
        f"{len(bundle['sha256'])} files"
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from geoloc.training.bundle import verify_bundle

    problems = verify_bundle(args.bundle)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.bundle}: {len(problems)} problems", file=sys.stderr)
        return 1
    print(f"{args.bundle}: every file, the backbone and the experts check out")
    return 0

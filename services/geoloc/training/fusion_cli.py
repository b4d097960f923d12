"""`geoloc train fusion`: fit and ship the orchestrator's fusion, the same as `geoloc cv --write-fusion`.

The fusion is fitted on out-of-fold answers of every Im2GPS3k train + val photo (experts trained
per photographer fold without it), after the cross-validation that reports what the fit does on
photographers it has not seen: see training/cv_cli.py. Fitting on val alone, as before, fitted
13 photographers and did not hold on others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geoloc.training.arguments import DATA_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fusion", help="cross-validate, fit and ship the orchestrator's fusion", description=__doc__
    )
    parser.add_argument("--data", type=Path, metavar="DIR", help=DATA_HELP)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs `geoloc cv --write-fusion` with these options, parsed by cv's own parser so that every
    option this command does not name takes cv's default."""
    from geoloc.training import cv_cli

    cv = cv_cli.add_parser(argparse.ArgumentParser(prog="geoloc").add_subparsers())
    options = ["--write-fusion", "--folds", str(args.folds), "--seed", str(args.seed)]
    return cv_cli.run(cv.parse_args(options + (["--data", str(args.data)] if args.data else [])))

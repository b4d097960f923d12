"""`geoloc eval`: score a labelled split against a predictions CSV, or against the prior baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_INPUT_ERROR = 2  # argparse's own code for bad usage; bad input files are the same kind of mistake
EXIT_OUTPUT_ERROR = 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="score predictions against a labelled split",
        description="Score image-geolocation predictions against a labelled split folder: accuracy within "
        "1/25/200/750/2500 km, GeoScore, median and mean error.",
    )
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="split folder holding labels.csv (and images/)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--predictions",
        type=Path,
        metavar="CSV",
        help="CSV with columns image,lat,lon and optional <expert>_lat,<expert>_lon pairs",
    )
    source.add_argument(
        "--prior-from",
        type=Path,
        metavar="TRAIN_DIR",
        help="score the prior baseline instead: every photo guessed at the densest place of this split's labels",
    )
    parser.add_argument("--report", type=Path, metavar="PATH.json", help="also write the report as JSON here")
    parser.add_argument("--by-expert", action="store_true", help="also score each expert's own answers")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the images that have a prediction instead of failing on those that do not",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # Imported here, not at module level, so `geoloc --help` never loads numpy or tqdm.
    from geoloc.evaluation.csvio import InputError
    from geoloc.evaluation.dataset import load_split
    from geoloc.evaluation.harness import evaluate
    from geoloc.evaluation.predictions import CsvPredictions
    from geoloc.evaluation.prior import PriorPredictions

    try:
        split = load_split(args.data)
        if args.prior_from is not None:
            source = PriorPredictions(load_split(args.prior_from))
        else:
            source = CsvPredictions(args.predictions)
        if args.by_expert and not getattr(source, "experts", ()):
            raise InputError(f"{source.description}: --by-expert needs <expert>_lat,<expert>_lon column pairs, and there are none")
        report = evaluate(split, source, allow_missing=args.allow_missing, by_expert=args.by_expert)
    except InputError as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)

    print(report.format_table())
    if args.report is not None:
        try:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(report.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            return _fail(f"{args.report}: cannot write report: {exc.strerror or exc}", EXIT_OUTPUT_ERROR)
    return 0


def _fail(message: str, code: int) -> int:
    print(f"geoloc eval: error: {message}", file=sys.stderr)
    return code

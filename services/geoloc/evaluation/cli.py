"""`geoloc eval`: score a labelled split against a predictions CSV, the prior baseline, or the live
orchestrator (fused answer and each expert side by side, see geoloc.evaluation.live)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoloc.common.tls import add_tls_arguments, client_tls_from_args

EXIT_INPUT_ERROR = 2  # argparse's own code for bad usage; bad input files are the same kind of mistake
EXIT_OUTPUT_ERROR = 1
EXIT_SERVICE_ERROR = 1  # the orchestrator could not be reached


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="score predictions against a labelled split",
        description="Score image-geolocation predictions against a labelled split folder: accuracy within "
        "1/25/200/750/2500 km, GeoScore, median and mean error.",
    )
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="split folder holding labels.csv (and images/)"
    )
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
    source.add_argument(
        "--orchestrator",
        metavar="HOST:PORT",
        help="send every photo to this running orchestrator (geoloc up: 127.0.0.1:50051) and score its fused "
        "answer and each expert's top point side by side; prints a markdown table",
    )
    parser.add_argument("--report", type=Path, metavar="PATH.json", help="also write the report as JSON here")
    parser.add_argument("--by-expert", action="store_true", help="also score each expert's own answers")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the images that have a prediction instead of failing on those that do not "
        "(always so with --orchestrator, which reports its failed calls)",
    )
    live = parser.add_argument_group("with --orchestrator")
    live.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="send only N photos, evenly spaced through labels.csv (the same N every run)",
    )
    live.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="calls in flight at once (default 1, what the orchestrator admits by default: its MAX_IN_FLIGHT)",
    )
    live.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="deadline of each call in seconds (default 60)"
    )
    add_tls_arguments(live)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # Imported here, not at module level, so `geoloc --help` never loads numpy or tqdm.
    from geoloc.evaluation.csvio import InputError
    from geoloc.evaluation.dataset import load_split
    from geoloc.evaluation.harness import evaluate
    from geoloc.evaluation.predictions import CsvPredictions
    from geoloc.evaluation.prior import PriorPredictions

    if args.orchestrator is not None:
        return _run_live(args)
    if args.limit is not None:
        return _fail("--limit applies to --orchestrator runs only", EXIT_INPUT_ERROR)
    try:
        split = load_split(args.data)
        if args.prior_from is not None:
            source = PriorPredictions(load_split(args.prior_from))
        else:
            source = CsvPredictions(args.predictions)
        if args.by_expert and not getattr(source, "experts", ()):
            raise InputError(
                f"{source.description}: --by-expert needs <expert>_lat,<expert>_lon column pairs, and there are none"
            )
        report = evaluate(split, source, allow_missing=args.allow_missing, by_expert=args.by_expert)
    except InputError as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)

    print(report.format_table())
    return _write_report(args.report, report.to_json())


def _run_live(args: argparse.Namespace) -> int:
    """Scores the orchestrator at args.orchestrator on the split (or --limit photos of it)."""
    import json
    from dataclasses import replace

    from geoloc.evaluation.csvio import InputError
    from geoloc.evaluation.dataset import load_split
    from geoloc.evaluation.harness import evaluate
    from geoloc.evaluation.live import (
        OrchestratorPredictions,
        OrchestratorUnreachable,
        format_markdown,
        live_report_dict,
    )

    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit must be at least 1, got {args.limit}", EXIT_INPUT_ERROR)
    if args.concurrency < 1 or args.timeout <= 0:
        return _fail("--concurrency must be at least 1 and --timeout positive", EXIT_INPUT_ERROR)
    try:
        tls = client_tls_from_args(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)
    try:
        split = load_split(args.data)
        if args.limit is not None and args.limit < len(split):
            # Evenly spaced, not the first N: labels.csv runs in file-name order, which groups
            # each Flickr author's photos, so its first rows are a few people's few places.
            count = len(split)
            split = replace(split, images=tuple(split.images[i * count // args.limit] for i in range(args.limit)))
        source = OrchestratorPredictions(
            args.orchestrator, concurrency=args.concurrency, timeout_s=args.timeout, tls=tls
        )
        # A failed call leaves its photo out rather than failing a long run; the table counts them.
        report = evaluate(split, source, allow_missing=True, by_expert=True)
    except InputError as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)
    except OrchestratorUnreachable as exc:
        return _fail(str(exc), EXIT_SERVICE_ERROR)
    print(format_markdown(report, source.stats))
    return _write_report(args.report, json.dumps(live_report_dict(report, source.stats), indent=2))


def _write_report(path: Path | None, text: str) -> int:
    if path is None:
        return 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        return _fail(f"{path}: cannot write report: {exc.strerror or exc}", EXIT_OUTPUT_ERROR)
    return 0


def _fail(message: str, code: int) -> int:
    print(f"geoloc eval: error: {message}", file=sys.stderr)
    return code

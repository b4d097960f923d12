"""The `geoloc` command line: one subcommand per job, each registered by its own module."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from geoloc import __version__

    parser = argparse.ArgumentParser(prog="geoloc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"geoloc {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    # Each module adds its subcommand and sets `func`; imports stay inside the modules'
    # handlers so that `geoloc --help` does not load torch or grpc.
    from geoloc import smoke
    from geoloc.client import locate as locate_cli
    from geoloc.evaluation import cli as evaluation_cli
    from geoloc.gallery import cli as gallery_cli
    from geoloc.judge import cli as judge_cli
    from geoloc.ops import cli as ops_cli
    from geoloc.suite import cli as suite_cli
    from geoloc.training import bundle_cli, cv_cli, features_cli
    from geoloc.training import cli as train_cli
    from geoloc.tritonserver import cli as triton_cli

    smoke.add_parser(subparsers)
    evaluation_cli.add_parser(subparsers)
    gallery_cli.add_parser(subparsers)
    triton_cli.add_parser(subparsers)
    train_cli.add_parser(subparsers)
    cv_cli.add_parser(subparsers)
    features_cli.add_parser(subparsers)
    bundle_cli.add_parser(subparsers)
    ops_cli.add_parser(subparsers)
    suite_cli.add_parser(subparsers)
    locate_cli.add_parser(subparsers)
    judge_cli.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from geoloc.evaluation.csvio import InputError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as error:  # something the user handed us (a missing data folder, say): no traceback
        print(f"geoloc {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

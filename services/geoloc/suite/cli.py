"""`geoloc up|down|status`: the suite as local processes on loopback, in a run directory.

Exit codes: up: 0 all SERVING, 1 refused or failed (what started is stopped again), 2 a bad
command line. down: 0 stopped (or nothing was running), 1 a process could not be signalled.
status: 0 every component alive and SERVING, 3 otherwise (also when nothing runs), 1 an
unreadable state file.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
from pathlib import Path

from geoloc.common.arguments import port_number, positive_seconds
from geoloc.common.paths import RUN_DIR
from geoloc.experts import SERVICE_TABLE
from geoloc.suite import COMPONENTS
from geoloc.suite.plan import HOST, SuiteOptions

EXIT_FAILED = 1
EXIT_NOT_ALL_SERVING = 3
DEFAULT_RUN_DIR = RUN_DIR

# The defaults of `geoloc up`'s ports: the plan's own (SuiteOptions), not a second copy.
DEFAULTS = SuiteOptions()
# The services in port order: each listens on the base port + its port_offset.
_BY_PORT = sorted(SERVICE_TABLE, key=lambda s: s.port_offset)


def up_epilog(options: SuiteOptions = DEFAULTS) -> str:
    """`geoloc up --help`'s epilog: every service of the registry at its default port, then Triton."""
    ports = ", ".join(f"{s.name} {options.base_port + s.port_offset}" for s in _BY_PORT)
    metrics = [options.metrics_base_port + s.port_offset for s in _BY_PORT]
    paragraph = (
        f"Default ports on {HOST}: {ports} (--base-port moves all {len(_BY_PORT)} services), their /metrics "
        f"{min(metrics)}..{max(metrics)}; Triton gRPC {options.triton_port}, metrics {options.triton_metrics_port}, "
        "HTTP off. Each component starts once what it needs is SERVING: embedding needs Triton, the "
        "orchestrator needs embedding and the experts in the suite (the others it is told are `none`). "
        "Other GEOLOC_* variables in this environment reach the components. The gallery builds its 100K "
        "index on a first start (about a minute). Logs: RUN_DIR/logs/<component>.log."
    )
    return textwrap.fill(paragraph, width=100, break_on_hyphens=False, break_long_words=False)


def _component(text: str) -> str:
    if text not in COMPONENTS:
        raise argparse.ArgumentTypeError(f"unknown component {text!r} (one of: {', '.join(COMPONENTS)})")
    return text


def add_parser(subparsers) -> None:
    """Registers the top-level subcommands `up`, `down` and `status`."""
    run_dir = argparse.ArgumentParser(add_help=False)
    run_dir.add_argument(
        "--run-dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        metavar="DIR",
        help="state file and logs (default: .run/ in the checkout)",
    )

    up = subparsers.add_parser(
        "up",
        parents=[run_dir],
        help=f"start Triton and the {len(SERVICE_TABLE)} services locally",
        description=__doc__,
        epilog=up_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subset = up.add_mutually_exclusive_group()
    subset.add_argument(
        "--only",
        nargs="+",
        type=_component,
        metavar="NAME",
        help="start these and what they require (one of: " + ", ".join(COMPONENTS) + ")",
    )
    subset.add_argument(
        "--without",
        nargs="+",
        type=_component,
        metavar="NAME",
        help="start all but these (e.g. an expert whose model this machine lacks)",
    )
    up.add_argument(
        "--base-port",
        type=port_number,
        default=DEFAULTS.base_port,
        metavar="PORT",
        help=f"{_BY_PORT[0].name}'s port; {', '.join(s.name for s in _BY_PORT[1:])} follow (default: %(default)s)",
    )
    up.add_argument(
        "--metrics-base-port",
        type=port_number,
        default=DEFAULTS.metrics_base_port,
        metavar="PORT",
        help="the services' /metrics ports, in the same order (default: %(default)s)",
    )
    up.add_argument("--no-metrics", action="store_true", help="serve no /metrics (services and Triton)")
    up.add_argument(
        "--triton-port", type=port_number, default=DEFAULTS.triton_port, metavar="PORT", help="(default: %(default)s)"
    )
    up.add_argument(
        "--triton-metrics-port",
        type=port_number,
        default=DEFAULTS.triton_metrics_port,
        metavar="PORT",
        help="(default: %(default)s)",
    )
    up.add_argument(
        "--triton-model",
        dest="triton_models",
        action="append",
        metavar="NAME",
        help="Triton model to load, repeat for several; the embedding service uses the first, and "
        "its text tower <first>_text when that is loaded too (default: efficientnet_lite2)",
    )
    up.add_argument("--triton-config-name", metavar="NAME", help="configs/NAME.pbtxt where a model has it, e.g. gpu")
    up.add_argument(
        "--bundle",
        type=Path,
        metavar="DIR",
        help="serve a model bundle (`geoloc bundle build`): Triton loads its model, every service its files; "
        "verified first, and refused when anything in it does not check out",
    )
    up.add_argument(
        "--timeout",
        type=positive_seconds,
        default=300.0,
        metavar="S",
        help="give up unless all are SERVING within this many seconds (default: %(default)g)",
    )
    up.set_defaults(func=run_up)

    down = subparsers.add_parser(
        "down",
        parents=[run_dir],
        help="stop what `geoloc up` started",
        description="SIGTERM each component in reverse dependency order; SIGKILL "
        "past the grace period. Exit 0 also when nothing runs.",
    )
    down.add_argument(
        "--grace",
        type=positive_seconds,
        default=30.0,
        metavar="S",
        help="per component, how long to wait after SIGTERM (default: %(default)g)",
    )
    down.set_defaults(func=run_down)

    status = subparsers.add_parser(
        "status",
        parents=[run_dir],
        help="pid, port, health and uptime of each component",
        description="Exit 0 when every component is alive and SERVING, 3 otherwise (also when nothing runs).",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=run_status)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def run_up(args: argparse.Namespace) -> int:
    from geoloc.suite.lifecycle import SuiteError, up
    from geoloc.suite.plan import DEFAULT_TRITON_MODELS, PlanError, SuiteOptions, build_plan, read_bundle, select
    from geoloc.suite.state import SuiteBusy

    models = tuple(args.triton_models or DEFAULT_TRITON_MODELS)
    if args.bundle is not None:
        problems = _bundle_problems(args.bundle, args.triton_models)
        if problems:
            print(f"geoloc up: error: the bundle {args.bundle} does not check out:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        backbone = read_bundle(args.bundle)["backbone"]
        models = (backbone["model"], *([backbone["text_model"]] if "text_model" in backbone else []))
    options = SuiteOptions(
        base_port=args.base_port,
        metrics_base_port=None if args.no_metrics else args.metrics_base_port,
        triton_port=args.triton_port,
        triton_metrics_port=None if args.no_metrics else args.triton_metrics_port,
        triton_models=models,
        triton_config_name=args.triton_config_name,
        bundle=args.bundle,
    )
    try:
        names = select(args.only, args.without)
        if args.only:
            added = [n for n in names if n not in args.only]
            if added:
                print(f"also starting what the chosen components need: {', '.join(added)}")
        plan = build_plan(names, options, args.run_dir.resolve())
    except PlanError as exc:
        print(f"geoloc up: error: {exc}", file=sys.stderr)
        return 2
    # A SIGTERM to `up` itself stops what it started, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        up(plan, args.run_dir, args.timeout, say=lambda line: print(line, flush=True))
    except (SuiteError, SuiteBusy) as exc:
        print(f"geoloc up: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print()
    _print_status(args.run_dir)
    print(f"\nall {len(plan)} SERVING; `geoloc status` to check, `geoloc down` to stop")
    return 0


def _bundle_problems(bundle: Path, triton_models: list[str] | None) -> list[str]:
    """What stops `bundle` from being served: what `geoloc bundle verify` finds, or other Triton
    models asked for beside it (the bundle's experts read its model's features only)."""
    from geoloc.training.bundle import verify_bundle

    if triton_models:
        return ["--triton-model and --bundle: a bundle names the one Triton model its experts read"]
    return verify_bundle(bundle)


def run_down(args: argparse.Namespace) -> int:
    from geoloc.suite.lifecycle import SuiteError, down
    from geoloc.suite.state import SuiteBusy

    try:
        outcomes = down(args.run_dir, args.grace, say=lambda line: print(line, flush=True))
    except (SuiteError, SuiteBusy) as exc:
        print(f"geoloc down: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"stopped the suite in {args.run_dir}" if outcomes else f"no suite is running from {args.run_dir}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from geoloc.suite.lifecycle import SuiteError, status

    try:
        found = status(args.run_dir)
    except SuiteError as exc:
        print(f"geoloc status: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    rows = [] if found is None else found[1]
    all_ok = bool(rows) and all(r.ok for r in rows)
    if args.json:
        print(
            json.dumps(
                {
                    "run_dir": str(args.run_dir.resolve()),
                    "started_at": None if found is None else found[0].started_at,
                    "all_serving": all_ok,
                    "components": [
                        {
                            "name": r.name,
                            "pid": r.pid,
                            "alive": r.alive,
                            "port": r.port,
                            "metrics_port": r.metrics_port,
                            "health": r.health,
                            "uptime_s": None if r.uptime_s is None else round(r.uptime_s, 1),
                            "log": r.log,
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
    elif found is None:
        print(f"no suite is running from {args.run_dir}")
    else:
        print(format_table(rows))
    return 0 if all_ok else EXIT_NOT_ALL_SERVING


def _print_status(run_dir: Path) -> None:
    from geoloc.suite.lifecycle import status

    found = status(run_dir)
    if found is not None:
        print(format_table(found[1]))


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_table(rows) -> str:
    """One line per component: name, pid, whether it is alive (and ours), port, health, uptime, log."""
    table = [("COMPONENT", "PID", "ALIVE", "PORT", "HEALTH", "UPTIME", "LOG")]
    table += [
        (r.name, str(r.pid), "yes" if r.alive else "no", str(r.port), r.health, format_uptime(r.uptime_s), r.log)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in table
    )

"""`geoloc triton`: runs Triton locally against model_repository/ until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from geoloc.embedding.model_config import DEFAULT_MODELS
from geoloc.tritonserver.launcher import DEFAULT_MODEL_REPOSITORY, TritonLaunch, traces_url_from


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "triton",
        help="run the Triton Inference Server locally",
        description=__doc__,
        epilog="Production runs NVIDIA's Triton container against the same repository: see docs/triton.md.",
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=DEFAULT_MODEL_REPOSITORY,
        metavar="DIR",
        help="Triton model repository (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME",
        help=f"model to load; repeat for several (default: {', '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="(default: %(default)s)")
    parser.add_argument("--http-port", type=int, help="serve HTTP/REST too, on this port (default: off)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default: %(default)s)")
    parser.add_argument(
        "--config-name",
        metavar="NAME",
        help="use configs/NAME.pbtxt where a model has it, e.g. gpu (default: config.pbtxt)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up if not READY after this many seconds (default: %(default)s)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from geoloc.tritonserver.launcher import TritonServer, TritonStartError

    launch = TritonLaunch(
        model_repository=args.model_repository,
        models=tuple(args.models or DEFAULT_MODELS),
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        model_config_name=args.config_name,
        traces_url=traces_url_from(os.environ),
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    triton = TritonServer(launch)
    triton.start()
    try:
        triton.wait_until_ready(args.ready_timeout)
    except TritonStartError as exc:
        triton.stop()
        print(f"geoloc triton: error: {exc}", file=sys.stderr)
        return 1
    print(f"Triton ready: gRPC {launch.grpc_url}, models {', '.join(launch.models)}; log {triton.log_path}", flush=True)
    while not stop.wait(0.5):
        if triton.returncode is not None:
            print(
                f"geoloc triton: tritonserver exited with code {triton.returncode}\n{triton.log_tail()}",
                file=sys.stderr,
            )
            return 1
    code = triton.stop()
    print(f"Triton stopped (exit code {code})", flush=True)
    return 0 if code == 0 else 1

"""`geoloc judge replay`: a recorded MLLM run served as an OpenAI-compatible chat-completions endpoint.

The replay answers each photo sent to POST /v1/chat/completions (as a data: URL in the user
message, shrunk and re-encoded as the judge sends it) with the run's recorded answer for that
photo, found by its content, as the JSON a model would write; a photo it has no answer for gets
the cannot-tell reply. Point the judge's base URL at the URL it prints. It serves until
interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _port_or_zero(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("judge", help="the judge's tools: replay a recorded MLLM run", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    replay = actions.add_parser(
        "replay", help="serve a recorded MLLM run as an OpenAI-compatible endpoint", description=__doc__
    )
    replay.add_argument(
        "--answers",
        type=Path,
        required=True,
        metavar="CSV",
        help="the recorded run: IMG_ID,LAT_pred,LON_pred,location,success,model_name rows",
    )
    replay.add_argument(
        "--photos", type=Path, nargs="+", required=True, metavar="DIR", help="the folders of the photos it answers"
    )
    replay.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    replay.add_argument("--port", type=_port_or_zero, default=0, help="(default: 0, a free port, printed)")
    replay.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    replay.set_defaults(func=run_replay)
    return parser


def run_replay(args: argparse.Namespace) -> int:
    import signal
    import threading

    from geoloc.common.logs import configure_logging
    from geoloc.judge.replay import MATCH_THRESHOLD, create_replay_server

    # Logs go to stderr, so that stdout holds only the lines below.
    configure_logging(args.log_level, stream=sys.stderr)
    try:
        server, _ = create_replay_server(args.answers, args.photos, args.host, args.port)
    except (OSError, ValueError) as error:
        print(f"geoloc judge replay: error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    replay = server.replay
    print(
        f"{len(replay.index.names)} photos indexed in {replay.index.seconds:.1f} s, {replay.answered} with an answer "
        f"(match within {MATCH_THRESHOLD} bits); model {replay.model}",
        flush=True,
    )
    print(f"base URL: {server.base_url}", flush=True)
    try:
        # A timed wait: the main thread returns to the interpreter, where the handlers run.
        while not stop.wait(0.5):
            pass
    finally:
        server.close()
    return 0

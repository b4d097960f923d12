"""`geoloc locate PHOTO...`: ask the orchestrator where photos were taken, and say it for people,
as JSON, or on a world map.

One Locate call per photo, in the order given, on one channel. For each photo it prints the best
guess with its place name, the 50 % and 90 % radii, the localizability, the other hypotheses with
their probabilities, the photo's EXIF GPS when it has one, each expert's status and latency, and
one line of timings. `--json` prints instead one JSON object per line and photo: the response in
the proto3 JSON mapping (google.protobuf.json_format.MessageToDict: the API's field names in
lowerCamelCase, e.g. bestGuess, enums by name) preceded by "photo" (and "map" when drawn).
`--map out.png` draws each answer's world map (geoloc.client.world_map): with one photo at
out.png, with several at out-1.png, out-2.png, ... numbered in the order the photos were given.

Exit status: 0 when every photo was located; 2 for a usage mistake (a photo that is not there is
named and nothing is sent), or when the orchestrator refused a photo as INVALID_ARGUMENT (its
message is printed and the other photos still go); 1 when the orchestrator cannot be reached
(nothing more is tried: start the suite with `geoloc up`) or a call failed otherwise (deadline,
server error), the other photos still going. An orchestrator at its admission limit refuses with
RESOURCE_EXHAUSTED and a delay: the call is sent again after it, with backoff, within --timeout
(geoloc.common.retry).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoloc.common.tls import add_tls_arguments, client_tls_from_args
from geoloc.experts import EXPERT_ENUMS, EXPERTS

DEFAULT_ADDRESS = "127.0.0.1:50051"  # the orchestrator of `geoloc up`
EXIT_FAILED = 1
EXIT_INPUT = 2


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "locate",
        help="geolocate photos with the running orchestrator",
        description="Geolocate photos with the orchestrator (start the suite first: geoloc up). Prints the "
        "best guess, its radii, the hypotheses and what each expert said.",
    )
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="JPEG, PNG, WebP or BMP files")
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"the orchestrator (default {DEFAULT_ADDRESS}, as started by geoloc up)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per photo (one per line)")
    parser.add_argument("--top-k", type=int, default=0, metavar="N", help="hypotheses to return, 1 to 20 (default 5)")
    parser.add_argument(
        "--map",
        type=Path,
        metavar="OUT.png",
        help="draw a world map of each answer (several photos: OUT-1.png, OUT-2.png, ...)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="deadline of each call in seconds (default 30)"
    )
    parser.add_argument(
        "--use-exif-gps",
        action="store_true",
        help="answer with the photo's EXIF GPS position when it has one (otherwise it is only reported)",
    )
    parser.add_argument(
        "--experts",
        type=_experts,
        metavar=",".join(EXPERTS),
        help="ask only these experts (default: every deployed one)",
    )
    add_tls_arguments(parser.add_argument_group("TLS (an orchestrator serving TLS or mutual TLS)"))
    parser.set_defaults(func=run)
    return parser


def _experts(text: str) -> list[int]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPERT_ENUMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated subset of {','.join(EXPERT_ENUMS)}")
    return [EXPERT_ENUMS[name] for name in names]


def map_paths(out: Path, count: int) -> list[Path]:
    """Where each photo's map goes: `out` itself for one photo, else out-1.png, out-2.png, ..."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(1, count + 1)]


def run(args: argparse.Namespace) -> int:
    # Check every photo before sending any: a typo in the last one should not cost the others' calls.
    photos: list[tuple[Path, bytes]] = []
    for path in args.photos:
        if not path.is_file():
            return _fail(f"{path}: no such file", EXIT_INPUT)
        try:
            photos.append((path, path.read_bytes()))
        except OSError as exc:
            return _fail(f"{path}: cannot read: {exc.strerror or exc}", EXIT_INPUT)
    if args.timeout <= 0:
        return _fail(f"--timeout must be positive, got {args.timeout}", EXIT_INPUT)
    try:
        tls = client_tls_from_args(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_INPUT)

    import asyncio

    return asyncio.run(_locate_all(args, photos, tls))


async def _locate_all(args: argparse.Namespace, photos: list[tuple[Path, bytes]], tls=None) -> int:
    import time

    import grpc

    from geoloc.common.channels import create_channel
    from geoloc.common.retry import call_with_retry
    from geoloc.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    options = orchestrator_pb2.LocateOptions(
        top_k=args.top_k,
        experts=args.experts or [],
        include_distribution=args.map is not None,
        use_exif_gps=args.use_exif_gps,
    )
    maps = map_paths(args.map, len(photos)) if args.map is not None else [None] * len(photos)
    code = 0
    async with create_channel(args.address, tls=tls) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        for (path, image), map_path in zip(photos, maps, strict=True):
            started = time.perf_counter()
            try:
                response = await call_with_retry(
                    stub.Locate,
                    orchestrator_pb2.LocateRequest(image=image, options=options),
                    args.timeout,
                    on_retry=lambda error, wait, path=path: print(
                        f"{path}: the orchestrator is busy; trying again in {wait:.1f} s", file=sys.stderr
                    ),
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    return _fail(
                        f"cannot reach the orchestrator at {args.address} ({error.details()}); is the suite "
                        "running? Start it with `geoloc up`, or pass --address",
                        EXIT_FAILED,
                    )
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    _fail(f"{path}: the orchestrator refused it: {error.details()}", EXIT_INPUT)
                    code = code or EXIT_INPUT
                elif error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    _fail(f"{path}: no answer within {args.timeout:g} s (--timeout)", EXIT_FAILED)
                    code = EXIT_FAILED
                else:
                    _fail(f"{path}: {error.code().name}: {error.details()}", EXIT_FAILED)
                    code = EXIT_FAILED
                continue
            round_trip_ms = 1000 * (time.perf_counter() - started)
            if map_path is not None:
                from geoloc.client.world_map import draw_map

                draw_map(response, map_path, title=path.name)
            answer = (
                _as_json(path, response, map_path)
                if args.json
                else format_answer(path.name, response, round_trip_ms, map_path)
            )
            print(answer, flush=True)
    return code


def _as_json(path: Path, response, map_path: Path | None) -> str:
    import json

    from google.protobuf.json_format import MessageToDict

    head = {"photo": str(path), **({"map": str(map_path)} if map_path is not None else {})}
    return json.dumps({**head, **MessageToDict(response)})


def format_answer(name: str, response, round_trip_ms: float | None = None, map_path: Path | None = None) -> str:
    """The human report of one LocateResponse (several lines, no trailing newline)."""
    from geoloc.experts import EXPERT_NAMES
    from geoloc.v1 import orchestrator_pb2

    best = response.best_guess
    source = "EXIF GPS" if response.answer_source == orchestrator_pb2.ANSWER_SOURCE_EXIF_GPS else "fusion"
    lines = [
        name,
        f"  best guess    {_latlon(best)}  p={best.probability:.2f}  {place_label(best.place)}  [{source}]",
        f"  radii         50 % within {_km(response.radius_50_km)} · 90 % within {_km(response.radius_90_km)}"
        f" · localizability {response.localizability:.2f}",
    ]
    others = list(response.hypotheses)[1:]
    for rank, h in enumerate(others, 2):
        head = "  hypotheses    " if rank == 2 else " " * 16
        lines.append(f"{head}{rank}. {_latlon(h)}  p={h.probability:.2f}  {place_label(h.place)}")
    if not others:
        lines.append("  hypotheses    none besides the best guess")
    if response.HasField("exif_gps"):
        use = "the answer" if source == "EXIF GPS" else "evidence only (--use-exif-gps to answer with it)"
        lines.append(f"  EXIF GPS      {response.exif_gps.lat_deg:.5f}, {response.exif_gps.lon_deg:.5f}: {use}")
    else:
        lines.append("  EXIF GPS      none in the photo")
    width = max((len(EXPERT_NAMES.get(o.expert, "?")) for o in response.expert_outputs), default=0)
    for i, output in enumerate(response.expert_outputs):
        status = orchestrator_pb2.ExpertStatus.Name(output.status).removeprefix("EXPERT_STATUS_")
        name = EXPERT_NAMES.get(output.expert, str(output.expert))
        row = f"{name.ljust(width)}  {status:<17} {output.latency_ms:7.0f} ms"
        if output.status == orchestrator_pb2.EXPERT_STATUS_OK:
            row += f"  weight {output.fusion_weight:.2f}"
            if output.model.name:
                row += f"  {output.model.name} {output.model.version}".rstrip()
        elif output.status_message:
            row += f"  {output.status_message}"
        lines.append(("  experts       " if i == 0 else " " * 16) + row)
    t = response.timings
    timing = (
        f"  timings       embed {t.embed_ms:.0f} ms · experts {t.experts_ms:.0f} ms · fusion {t.fusion_ms:.0f} ms"
        f" · total {t.total_ms:.0f} ms"
    )
    if round_trip_ms is not None:
        timing += f" (round trip {round_trip_ms:.0f} ms)"
    lines.append(timing + (f" · request {response.request_id}" if response.request_id else ""))
    if map_path is not None:
        lines.append(f"  map           {map_path}")
    return "\n".join(lines)


def place_label(place) -> str:
    """'City, Admin1, CC (3 km) — Country', 'ocean — 120 km from City, ...', or 'unknown land — near ...'."""
    from geoloc.v1 import orchestrator_pb2

    near = f"{place.nearest_city} ({_km(place.nearest_city_distance_km)})" if place.nearest_city else ""
    if place.kind == orchestrator_pb2.PLACE_KIND_COUNTRY:
        return f"{near} — {place.country_name}" if near else place.country_name
    if place.kind == orchestrator_pb2.PLACE_KIND_OCEAN:
        return f"ocean — {_km(place.nearest_city_distance_km)} from {place.nearest_city}" if near else "ocean"
    if place.kind == orchestrator_pb2.PLACE_KIND_UNKNOWN_LAND:
        return f"unknown land — near {near}" if near else "unknown land"
    return "unknown place"


def _latlon(h) -> str:
    return f"{h.lat_deg:.4f}, {h.lon_deg:.4f}"


def _km(km: float) -> str:
    return f"{km:.1f} km" if km < 10 else f"{km:,.0f} km"


def _fail(message: str, code: int) -> int:
    print(f"geoloc locate: error: {message}", file=sys.stderr)
    return code

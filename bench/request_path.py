"""The request path against the floors measured in the same run: fusion, the orchestrator's
overhead, each expert, cross-request batching, and the whole call.

Against a running suite (`geoloc up`), on loopback, at the orchestrator's own settings (its
defaults, or GEOLOC_ORCHESTRATOR_* as exported here). Photos: the first --photos of the Im2GPS3k
val split (the shipped samples/ when the split is not beside the checkout), each sent once per
round, one call at a time.

    .venv/bin/geoloc up
    .venv/bin/python bench/request_path.py [--photos 30] [--rounds 2]

What it measures, in this order:
- floors: the embedding service's Embed and the gallery's Search, called directly, one at a time;
- each expert, called directly at the orchestrator's settings (samples, steps, beam, k), one at a
  time: the SH sampler too, although the shipped fusion gives it weight 0 and does not ask it;
- Locate, one call at a time, as a client sends it (the default experts) with the experts'
  points in the answer: its round trip, the orchestrator's overhead (round trip minus the longer
  of the embedding call plus the slowest embedding expert and the text expert, which starts with
  the embedding call: geoloc.client.load.experts_path_ms) and its own fusion stage (fusion, place
  naming, the response);
- fusion alone: `fuse` in this process on the experts' points those answers carried, with the
  fusion parameters the orchestrator loads;
- batching: the flow sampler and the tokens expert called by 1 and then by --concurrent callers at
  once, as calls per second.

The table gives each target (issue 20) as a ratio to its limit or floor; where a target is not
met, it says so.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import grpc
import numpy as np

from geoloc.client.load import experts_path_ms
from geoloc.common.channels import create_channel
from geoloc.common.paths import CHECKOUT, data_root
from geoloc.experts import EXPERT_NAMES, EXPERT_TABLE, SAMPLED_EXPERTS, SERVICE_TABLE
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.experts import asked_of
from geoloc.orchestrator.fusion import ExpertPoints, fuse
from geoloc.orchestrator.parameters import load_fusion
from geoloc.v1 import embedding_pb2, orchestrator_pb2

FUSION_LIMIT_MS = 5.0
OVERHEAD_LIMIT_MS = 10.0
EXPERT_LIMIT_MS = 100.0
END_TO_END_LIMIT = 1.5  # × (embedding p50 + gallery p50)
FLOOR_EXPERT = "gallery"  # issue 20's floor: one Embed and one gallery Search
BATCHING_SERVICES = ("sampler", "tokens")  # issue 20's batching target: the services that batch across callers


def photos(count: int) -> list[bytes]:
    val = data_root() / "im2gps3k" / "val"
    if val.is_dir():
        from geoloc.evaluation.dataset import load_split

        return [image.path.read_bytes() for image in load_split(val).images[:count]]
    return [path.read_bytes() for path in sorted((CHECKOUT / "samples").glob("*.jpg"))]


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def p50(values) -> float:
    return float(np.median(values)) if len(values) else float("nan")


async def timed(call, request, timeout_s: float = 60.0) -> tuple[float, object]:
    started = time.perf_counter()
    answer = await call(request, timeout=timeout_s)
    return 1000 * (time.perf_counter() - started), answer


async def calls_per_second(call, request, concurrent: int, seconds: float) -> float:
    """Callers sending `request` back to back for `seconds`: answers per second."""
    stop_at, done = time.perf_counter() + seconds, 0

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call(request, timeout=60)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrent)))
    return done / (time.perf_counter() - started)


def expert_points(answer: orchestrator_pb2.LocateResponse, fused_directly: dict[str, list]) -> list[ExpertPoints]:
    """The experts' points as the orchestrator fused them (those that answered with points). A
    sampler's answer carries its modes, not the samples fused: those come from `fused_directly`,
    the same expert called directly with the orchestrator's request (seed 0: the same samples)."""
    points = []
    for output in answer.expert_outputs:
        if output.status != orchestrator_pb2.EXPERT_STATUS_OK or output.expert not in EXPERT_NAMES:
            continue
        name = EXPERT_NAMES[output.expert]
        fused = fused_directly[name] if name in SAMPLED_EXPERTS else output.points
        if fused:
            points.append(ExpertPoints.of(name, fused))
    return points


async def run(args) -> None:
    s = OrchestratorSettings()
    images = photos(args.photos)
    asked = asked_of(s)
    addresses = {
        svc.name: getattr(s, svc.address_setting) if svc.address_setting else args.address for svc in SERVICE_TABLE
    }
    channels = {
        name: create_channel(address, max_message_bytes=s.max_receive_message_bytes)
        for name, address in addresses.items()
    }
    stubs = {svc.name: svc.stub_class()(channels[svc.name]) for svc in SERVICE_TABLE}
    locate = stubs["orchestrator"].Locate
    embed = stubs["embedding"].Embed
    calls = {e.name: getattr(stubs[e.service], e.rpc) for e in EXPERT_TABLE}

    options = orchestrator_pb2.LocateOptions(include_expert_outputs=True)
    for image in images[:2]:  # warm every service
        await locate(orchestrator_pb2.LocateRequest(image=image, options=options), timeout=60)

    ms: dict[str, list[float]] = {}
    answers, fused_directly, not_ok = [], [], []
    for _ in range(args.rounds):
        for image in images:
            took, embedded = await timed(embed, embedding_pb2.EmbedRequest(image=image))
            ms.setdefault("embedding", []).append(took)
            fused = {}
            for entry in EXPERT_TABLE:
                carried = embedded.embedding if entry.reads == "embedding" else image
                took, answer = await timed(calls[entry.name], entry.request(carried, asked))
                ms.setdefault(entry.name, []).append(took)
                fused[entry.name] = entry.fused_points(answer)
            fused_directly.append(fused)
            took, answer = await timed(locate, orchestrator_pb2.LocateRequest(image=image, options=options))
            ms.setdefault("locate", []).append(took)
            answers.append(answer)
            ms.setdefault("overhead", []).append(took - experts_path_ms(answer))
            ms.setdefault("fusion stage", []).append(answer.timings.fusion_ms)
            for o in answer.expert_outputs:
                if o.status not in (orchestrator_pb2.EXPERT_STATUS_OK, orchestrator_pb2.EXPERT_STATUS_SKIPPED):
                    not_ok.append(f"{EXPERT_NAMES.get(o.expert, o.expert)} {o.status_message}")

    fitted = load_fusion(s.fusion_parameters)
    fusion_ms = []
    for answer, fused in zip(answers, fused_directly, strict=True):
        points = expert_points(answer, fused)
        started = time.perf_counter()
        fuse(points, fitted.parameters, fitted.prior)
        fusion_ms.append(1000 * (time.perf_counter() - started))
    ms["fusion"] = fusion_ms

    embedded = (await embed(embedding_pb2.EmbedRequest(image=images[0]), timeout=60)).embedding
    batching = {}
    for entry in (next(e for e in EXPERT_TABLE if e.service == service) for service in BATCHING_SERVICES):
        request = entry.request(embedded, asked)
        alone = await calls_per_second(calls[entry.name], request, 1, args.seconds)
        together = await calls_per_second(calls[entry.name], request, args.concurrent, args.seconds)
        batching[entry.name] = (alone, together)
    for channel in channels.values():
        await channel.close()

    print(f"orchestrator {args.address}; {len(images)} photos x {args.rounds} rounds, one call at a time\n")
    print("| stage | p50 ms | p90 ms |")
    print("|---|---|---|")
    for name, values in ms.items():
        print(f"| {name} | {p50(values):.1f} | {np.quantile(values, 0.9):.1f} |")
    floor = p50(ms["embedding"]) + p50(ms[FLOOR_EXPERT])
    rows = [
        ("1. fusion p50", p50(ms["fusion"]), FUSION_LIMIT_MS, "ms"),
        ("2. orchestrator overhead p50", p50(ms["overhead"]), OVERHEAD_LIMIT_MS, "ms"),
        *((f"3. expert {name} p50", p50(ms[name]), EXPERT_LIMIT_MS, "ms") for name in EXPERT_NAMES.values()),
        ("5. Locate p50 / (embedding + gallery p50)", p50(ms["locate"]) / floor, END_TO_END_LIMIT, "x"),
    ]
    print("\n| target | measured | limit | measured / limit | met |")
    print("|---|---|---|---|---|")
    for name, value, limit, unit in rows:
        print(f"| {name} | {value:.2f} {unit} | {limit:g} {unit} | {value / limit:.2f} | {met(value <= limit)} |")
    print(f"| 5. every asked expert OK in every Locate | {len(not_ok)} not OK | 0 | | {met(not not_ok)} |")
    for name, (alone, together) in batching.items():
        gain = together / alone
        print(
            f"| 4. {name}: calls/s with {args.concurrent} callers / with 1 | {together:.2f} / {alone:.2f} | > 1 "
            f"| {gain:.2f} | {met(gain > 1.1)} |"
        )
    for problem in not_ok:
        print(f"\nnot OK: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051", help="the orchestrator (host:port)")
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrent", type=int, default=4, help="callers at once in the batching rows")
    parser.add_argument("--seconds", type=float, default=10.0, help="per batching measurement")
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args))
    except grpc.aio.AioRpcError as error:
        print(f"a call failed: {error.code().name}: {error.details()}; is the suite up (`geoloc up`)?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end Locate latency and throughput at 1, 4 and 16 concurrent clients, and the orchestrator's own overhead.

Against a running suite (`geoloc up`; default address 127.0.0.1:50051), in one run:
- per concurrency level: client-side latency percentiles (p50 / p90 / p99) and photos per second,
  and its throughput as a ratio to one client;
- how many expert calls were left out (timed out, mostly): under load an expert past its timeout
  is dropped, which makes the answer poorer and the call cheaper, so throughput must be read with it;
- the orchestrator's overhead per call, from the same calls: the client's end-to-end time minus
  (the embedding call + the slowest expert call), as the orchestrator timed them itself; it is what
  validation, EXIF reading, fan-out, fusion, place names and the two extra network hops cost.

Photos: the first --photos of the Im2GPS3k val split, each sent --rounds times at each level.

    .venv/bin/geoloc up && .venv/bin/python bench/orchestrator_load.py [--address 127.0.0.1:50051] [--photos 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
import numpy as np

from geoloc.evaluation.dataset import default_data_root, load_split
from geoloc.v1 import orchestrator_pb2, orchestrator_pb2_grpc

LEVELS = (1, 4, 16)


async def run_level(stub, photos: list[bytes], clients: int, rounds: int) -> tuple[list[float], list[float], float, float]:
    """(latencies ms, overheads ms, photos/s, share of expert calls left out) with `clients`
    concurrent callers sharing the photos."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _ in range(rounds):
        for photo in photos:
            queue.put_nowait(photo)
    latencies, overheads, left_out = [], [], []

    async def client():
        while not queue.empty():
            photo = queue.get_nowait()
            started = time.perf_counter()
            answer = await stub.Locate(orchestrator_pb2.LocateRequest(image=photo), timeout=60)
            elapsed = 1000 * (time.perf_counter() - started)
            latencies.append(elapsed)
            slowest = max((o.latency_ms for o in answer.expert_outputs), default=0.0)
            overheads.append(elapsed - answer.timings.embed_ms - slowest)
            left_out.extend(o.status != orchestrator_pb2.EXPERT_STATUS_OK for o in answer.expert_outputs)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, overheads, len(latencies) / (time.perf_counter() - started), float(np.mean(left_out))


async def main_async(args) -> None:
    val = load_split(default_data_root() / "im2gps3k" / "val")
    photos = [image.path.read_bytes() for image in val.images[: args.photos]]
    async with grpc.aio.insecure_channel(args.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        await run_level(stub, photos[:2], 1, 1)  # warm the channel and every service
        print(f"orchestrator {args.address}; {len(photos)} val photos x {args.rounds} rounds per level\n")
        print("| clients | calls | p50 ms | p90 ms | p99 ms | photos/s | throughput vs 1 client "
              "| overhead p50 ms | overhead p90 ms | expert calls left out |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        base = None
        for clients in LEVELS:
            latencies, overheads, rate, left_out = await run_level(stub, photos, clients, args.rounds)
            base = base or rate
            p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
            o50, o90 = np.percentile(overheads, [50, 90])
            print(f"| {clients} | {len(latencies)} | {p50:.0f} | {p90:.0f} | {p99:.0f} | {rate:.2f} | {rate / base:.2f} | "
                  f"{o50:.0f} | {o90:.0f} | {left_out:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

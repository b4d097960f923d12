"""Load on the orchestrator: N concurrent clients for T seconds, a graceful drain, and a soak.

Against a running suite (`geoloc up`), on loopback only; the client count and the duration are
bounded (geoloc.client.load). Photos: the first --photos of the Im2GPS3k val split, sent in
turn. Every figure comes from this run, and throughput is also given as a ratio to the first
level's, measured in the same run (these machines are shared and noisy).

    .venv/bin/geoloc up
    .venv/bin/python bench/load.py [--clients 1 4 16] [--seconds 30]     # levels table
    .venv/bin/python bench/load.py --drain [--clients 4] [--seconds 30]   # SIGTERM one of two replicas
    .venv/bin/python bench/load.py --soak [--clients 4] [--seconds 600]   # RSS of every process over time

Levels: throughput (OK answers per second), the calls the orchestrator's admission limit refused
(RESOURCE_EXHAUSTED with a retry delay, which the client waits before its next call), latency p50
/ p95 / p99 of OK answers and p99 over p50, other failed calls by status code, the share of
partial answers (an expert left out, mostly past its timeout) and which experts were left out with
which status, and the orchestrator's own overhead (end to end minus the embedding call and the
slowest expert call).

Drain: two more orchestrator processes are started on free ports, in front of the suite's
embedding service and experts, with GEOLOC_ORCHESTRATOR_DRAIN_S; the clients reach them through
one channel that round-robins over both (health-checked, geoloc.common.channels), and the first
replica gets SIGTERM halfway through. Expected: not one call fails.

Soak: one level for --seconds (default 600) while the resident memory (VmRSS) of every process
`geoloc up` started, with its child processes, is sampled every --sample-every seconds; it prints
RSS at the start (after --warm-up seconds of load, once allocators and caches have grown to their working size), at
the end, and the change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from geoloc.client.load import LoadReport, drive
from geoloc.common.channels import create_channel
from geoloc.common.paths import data_root
from geoloc.common.ports import free_port
from geoloc.evaluation.dataset import load_split
from geoloc.suite.health import SERVING, Probe
from geoloc.suite.state import load_state


def photos_from_val(count: int) -> list[bytes]:
    val = load_split(data_root() / "im2gps3k" / "val")
    return [image.path.read_bytes() for image in val.images[:count]]


def failures(report: LoadReport) -> str:
    """Failed calls by code, besides the admission's refusals (a column of their own)."""
    failed = {code: n for code, n in report.codes().items() if code not in ("OK", "RESOURCE_EXHAUSTED")}
    return ", ".join(f"{code} {n}" for code, n in sorted(failed.items())) or "none"


def left_out(report: LoadReport) -> str:
    """Expert answers missing from OK answers, by expert and status, e.g. 'sh DEADLINE_EXCEEDED 12'."""
    missing = {key: n for key, n in report.expert_statuses().items() if not key.endswith((" OK", " SKIPPED"))}
    return ", ".join(f"{key} {n}" for key, n in sorted(missing.items())) or "none"


async def levels(args, photos: list[bytes]) -> None:
    async with create_channel(args.address) as channel:
        await drive(
            channel, args.address, photos[:2], clients=1, seconds=3, timeout_s=args.timeout
        )  # warm every service
        print(f"orchestrator {args.address}; {len(photos)} val photos; {args.seconds:g} s per level\n")
        print(
            "| clients | calls | OK/s | vs first level | refused | p50 ms | p95 ms | p99 ms | p99 / p50 | failed "
            "| partial answers | experts left out | overhead p50 ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        base = None
        for clients in args.clients:
            report = await drive(channel, args.address, photos, clients, args.seconds, timeout_s=args.timeout)
            base = base or report.throughput()
            print(
                f"| {clients} | {len(report.records)} | {report.throughput():.2f} | {report.throughput() / base:.2f} "
                f"| {report.codes()['RESOURCE_EXHAUSTED']} | {report.latency_ms(50):.0f} | {report.latency_ms(95):.0f} "
                f"| {report.latency_ms(99):.0f} | {report.latency_ms(99) / report.latency_ms(50):.2f} "
                f"| {failures(report)} | {report.partial_share():.0%} | {left_out(report)} "
                f"| {report.overhead_ms(50):.0f} |"
            )


def start_replica(port: int, metrics_port: int, drain_s: float) -> subprocess.Popen:
    prefix = "GEOLOC_ORCHESTRATOR_"
    env = {
        **os.environ,
        f"{prefix}PORT": str(port),
        f"{prefix}METRICS_PORT": str(metrics_port),
        f"{prefix}DRAIN_S": str(drain_s),
        f"{prefix}GRACE_PERIOD_S": "30",
        f"{prefix}LOG_LEVEL": "warning",
        # This run is about draining: every call of its few clients is admitted.
        f"{prefix}MAX_IN_FLIGHT": "none",
    }
    return subprocess.Popen([sys.executable, "-m", "geoloc.orchestrator.server"], env=env)


def wait_serving(address: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with Probe(address) as probe:
        while probe.check() != SERVING:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the orchestrator replica at {address} did not start")
            time.sleep(0.2)


async def drain(args, photos: list[bytes]) -> None:
    clients = args.clients[0]
    ports = [free_port() for _ in range(2)]
    replicas = [start_replica(port, free_port(), args.drain_s) for port in ports]
    try:
        for port, process in zip(ports, replicas, strict=True):
            await asyncio.to_thread(wait_serving, f"127.0.0.1:{port}", process)
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        async with create_channel(target) as channel:
            load = asyncio.create_task(drive(channel, target, photos, clients, args.seconds, timeout_s=args.timeout))
            await asyncio.sleep(args.seconds / 2)
            replicas[0].send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            exit_code = await asyncio.to_thread(replicas[0].wait, 60)
            exited_after = time.perf_counter() - signalled
            report = await load
    finally:
        for process in replicas:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
    after = [r for r in report.records if r.started_s > args.seconds / 2]
    print(
        f"two orchestrator replicas (drain {args.drain_s:g} s) behind round robin; {clients} clients for "
        f"{args.seconds:g} s; SIGTERM to the first at {args.seconds / 2:g} s\n"
    )
    print(
        "| calls | OK | failed | calls started after the SIGTERM | replica exit code | replica exited after s "
        "| p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(report.records)} | {report.codes()['OK']} | {failures(report)} | {len(after)} | {exit_code} "
        f"| {exited_after:.1f} | {report.latency_ms(50):.0f} | {report.latency_ms(99):.0f} |"
    )


def rss_mib(pid: int) -> float | None:
    """Resident memory of `pid` and all its descendants (Triton's model runs in a child stub process)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            if current == pid:
                return None
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) / 1024
        pending.extend(children.get(current, []))
    return total


async def soak(args, photos: list[bytes]) -> None:
    state = load_state(Path(args.run_dir))
    if state is None:
        raise SystemExit(f"no suite is running under {args.run_dir}: run `geoloc up` first")
    processes = {c.name: c.pid for c in state.components}
    samples: list[tuple[float, dict[str, float | None]]] = []
    clients = args.clients[0]

    async def sample_memory(began: float) -> None:
        while True:
            samples.append((time.perf_counter() - began, {name: rss_mib(pid) for name, pid in processes.items()}))
            await asyncio.sleep(args.sample_every)

    before = {name: rss_mib(pid) for name, pid in processes.items()}
    async with create_channel(args.address) as channel:
        began = time.perf_counter()
        sampler = asyncio.create_task(sample_memory(began))
        report = await drive(channel, args.address, photos, clients, args.seconds, timeout_s=args.timeout)
        sampler.cancel()
    samples.append((time.perf_counter() - began, {name: rss_mib(pid) for name, pid in processes.items()}))
    settled = [(t, rss) for t, rss in samples if t >= args.warm_up]
    start_t, start = settled[0]
    end_t, end = settled[-1]
    print(
        f"soak: {clients} clients for {args.seconds:g} s against {args.address}; {len(report.records)} calls, "
        f"{report.throughput():.2f} OK/s, failed: {failures(report)}; RSS sampled every {args.sample_every:g} s\n"
    )
    print(
        f"| process | RSS before load MiB | RSS at {start_t:.0f} s MiB | RSS at {end_t:.0f} s MiB | change "
        "| slope MiB per 10 min |"
    )
    print("|---|---|---|---|---|---|")
    for name in processes:
        points = [(t, rss[name]) for t, rss in settled if rss[name] is not None]
        if len(points) < 2:
            print(f"| {name} | {before[name]} | gone | | | |")
            continue
        times, values = np.array(points).T
        slope = np.polyfit(times, values, 1)[0] * 600
        print(
            f"| {name} | {before[name]:.0f} | {values[0]:.0f} | {values[-1]:.0f} | "
            f"{(values[-1] - values[0]) / values[0]:+.1%} | {slope:+.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:50051", help="the orchestrator (loopback only)")
    parser.add_argument("--clients", type=int, nargs="+", default=None, help="concurrent clients per level")
    parser.add_argument("--seconds", type=float, default=None, help="duration of each level (drain: of the run)")
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=60.0, help="each call's deadline, s")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--drain", action="store_true", help="SIGTERM one of two replicas mid-run")
    mode.add_argument("--soak", action="store_true", help="sample every suite process's RSS over a long run")
    parser.add_argument("--drain-s", type=float, default=1.5, help="the replicas' GEOLOC_ORCHESTRATOR_DRAIN_S")
    parser.add_argument("--warm-up", type=float, default=30.0, help="soak: seconds of load before the start RSS")
    parser.add_argument("--sample-every", type=float, default=30.0, help="soak: seconds between RSS samples")
    parser.add_argument("--run-dir", default=".run", help="soak: the suite's run directory")
    args = parser.parse_args()
    args.clients = args.clients or ([4] if args.drain or args.soak else [1, 4, 16])
    args.seconds = args.seconds or (600.0 if args.soak else 30.0)
    photos = photos_from_val(args.photos)
    asyncio.run(drain(args, photos) if args.drain else soak(args, photos) if args.soak else levels(args, photos))


if __name__ == "__main__":
    main()

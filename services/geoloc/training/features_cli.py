"""`geoloc shards` writes a split folder as WebDataset shards; `geoloc features` computes the serving
backbone's features over shards (or a split folder), in parallel and resumably (docs/training.md)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from geoloc.common.tls import ClientTls
from geoloc.evaluation.csvio import InputError
from geoloc.training.arguments import DEFAULT_MODEL
from geoloc.training.shards import PHOTOS_PER_SHARD, photo_shards, write_shards

# Set by Kubernetes on each pod of an Indexed Job: the pod's index is its worker index.
JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"


def add_parser(subparsers) -> None:
    shards = subparsers.add_parser(
        "shards", help="write a split folder as WebDataset tar shards", description=write_shards.__doc__
    )
    shards.add_argument("split", type=Path, metavar="SPLIT_DIR", help="a split folder: images/ and labels.csv")
    shards.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the .tar shards go")
    shards.add_argument("--photos-per-shard", type=int, default=PHOTOS_PER_SHARD, metavar="N")
    shards.set_defaults(func=run_shards)

    features = subparsers.add_parser(
        "features", help="the serving backbone's features over photo shards", description=__doc__
    )
    features.add_argument(
        "--input",
        type=Path,
        required=True,
        metavar="PATH",
        help="a folder of *.tar shards, one .tar, or a split folder",
    )
    features.add_argument("--out", type=Path, required=True, metavar="DIR", help="the features folder")
    features.add_argument("--model", default=DEFAULT_MODEL, help=f"the Triton model (default: {DEFAULT_MODEL})")
    where = features.add_mutually_exclusive_group()
    where.add_argument("--triton-url", metavar="HOST:PORT", help="a running Triton serving --model (gRPC)")
    where.add_argument(
        "--start-triton", action="store_true", help="start Triton from the nvidia-pytriton wheel for this run"
    )
    tls = features.add_argument_group("TLS to Triton (when it serves gRPC with --grpc-use-ssl)")
    tls.add_argument("--triton-ca", type=Path, metavar="PEM", help="the CA that signed Triton's certificate")
    tls.add_argument("--triton-cert", type=Path, metavar="PEM", help="this client's certificate (mutual TLS)")
    tls.add_argument("--triton-key", type=Path, metavar="PEM", help="and its key")
    tls.add_argument("--triton-server-name", metavar="NAME", help="the name Triton's certificate carries")
    features.add_argument(
        "--device", default="cpu", help="without Triton: run the model's backbone.py in-process here (cpu, cuda)"
    )
    features.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes (default: 1)")
    features.add_argument(
        "--worker-index",
        type=int,
        metavar="I",
        help=f"be worker I of --worker-count alone (default: ${JOB_INDEX_ENV}, as an Indexed Job's pods have)",
    )
    features.add_argument("--worker-count", type=int, metavar="N", help="how many workers share the shards")
    features.add_argument(
        "--photos-per-shard", type=int, default=PHOTOS_PER_SHARD, metavar="N", help="for a split folder's shards"
    )
    features.add_argument("--batch", type=int, metavar="B", help="photos per inference (default: 16)")
    features.set_defaults(func=run_features)


def run_shards(args: argparse.Namespace) -> int:
    written = write_shards(args.split, args.out, args.photos_per_shard)
    print(f"{len(written)} shards in {args.out}")
    return 0


def run_features(args: argparse.Namespace) -> int:
    # Imported here: `geoloc --help` must not load numpy and torch (tests/test_evaluation.py).
    from geoloc.training.feature_shards import (
        BATCH,
        InProcessFeatures,
        TritonFeatures,
        claim_folder,
        features_manifest,
        model_sha256,
        run_worker,
    )

    args.batch = BATCH if args.batch is None else args.batch
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.batch < 1:
        raise InputError(f"--batch must be at least 1, got {args.batch}")
    index, count = _worker_slot(args)
    tls = _triton_tls(args)
    if tls is not None and not args.triton_url:
        raise InputError("--triton-ca (and the client certificate) are for the Triton at --triton-url")
    shards = photo_shards(args.input, args.photos_per_shard)
    with ExitStack() as stack:
        url = args.triton_url
        if args.start_triton:
            url = stack.enter_context(_local_triton()).grpc_url
        if count is None and args.workers > 1:
            return _run_local_workers(args, url)
        if url:
            backbone = TritonFeatures(url, args.model, tls=tls)
        else:
            backbone = InProcessFeatures(args.model, device=args.device)
        stack.callback(backbone.close)
        claim_folder(args.out, features_manifest(backbone, model_sha256(args.model), shards, args.input))
        counts = run_worker(shards, args.out, backbone, index or 0, count or 1, args.batch)
    print(
        f"worker {index or 0}/{count or 1}: {counts['done']} shards done, {counts['skipped']} already done; "
        f"{counts['photos']} photos, {counts['failed']} failed",
        file=sys.stderr,
    )
    if count is None:
        return _report(args.out)
    return 0


def _triton_tls(args: argparse.Namespace) -> ClientTls | None:
    given = [args.triton_cert, args.triton_key, args.triton_server_name]
    if args.triton_ca is None:
        if any(given):
            raise InputError("--triton-cert, --triton-key and --triton-server-name need --triton-ca")
        return None
    for flag, path in (
        ("--triton-ca", args.triton_ca),
        ("--triton-cert", args.triton_cert),
        ("--triton-key", args.triton_key),
    ):
        if path is not None and not path.is_file():
            raise InputError(f"{flag} {path}: no such file")
    try:
        return ClientTls(args.triton_ca, args.triton_cert, args.triton_key, args.triton_server_name)
    except ValueError as exc:
        raise InputError(f"--triton-cert and --triton-key: {exc}") from None


def _worker_slot(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(index, count) when this process is one worker of several, else (None, None)."""
    index = args.worker_index
    if index is None and args.worker_count is not None and JOB_INDEX_ENV in os.environ:
        try:
            index = int(os.environ[JOB_INDEX_ENV])
        except ValueError:
            raise InputError(f"${JOB_INDEX_ENV} must be an integer, got {os.environ[JOB_INDEX_ENV]!r}") from None
    if (index is None) != (args.worker_count is None):
        raise InputError(f"--worker-count needs --worker-index (or ${JOB_INDEX_ENV}), and the other way round")
    if args.worker_count is not None and args.workers != 1:
        raise InputError("--workers starts local workers; a worker given --worker-count is one of them")
    if index is not None and not 0 <= index < args.worker_count:
        raise InputError(f"worker index must be in 0..{args.worker_count - 1}, got {index}")
    return index, args.worker_count


def _run_local_workers(args: argparse.Namespace, url: str | None) -> int:
    """N worker processes on this machine, each with its share of the cores, then the summary."""
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    common = [
        *("--input", str(args.input), "--out", str(args.out), "--model", args.model),
        *("--worker-count", str(args.workers), "--photos-per-shard", str(args.photos_per_shard)),
        *("--batch", str(args.batch), "--device", args.device),
        *(("--triton-url", url) if url else ()),
    ]
    for flag in ("triton_ca", "triton_cert", "triton_key", "triton_server_name"):
        if getattr(args, flag) is not None:
            common += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "geoloc.cli", "features", *common, "--worker-index", str(i)], env=environment
        )
        for i in range(args.workers)
    ]
    failed = [i for i, worker in enumerate(workers) if worker.wait() != 0]
    status = _report(args.out)
    if failed:
        print(f"workers {failed} failed; run the same command again to finish their shards", file=sys.stderr)
        return 1
    return status


def _report(out: Path) -> int:
    from geoloc.training.feature_shards import FAILED_LIST, MANIFEST, summarise_folder

    if not (out / MANIFEST).exists():
        print(f"no features in {out}: no worker got as far as its first shard", file=sys.stderr)
        return 1
    summary = summarise_folder(out)
    print(
        f"{summary['done']} feature shards in {out}, {len(summary['missing'])} missing; "
        f"{summary['photos']} photos, {summary['failed']} failed (listed in {out / FAILED_LIST})"
    )
    return 0 if not summary["missing"] else 1


def _local_triton():
    from geoloc.common.ports import free_port
    from geoloc.tritonserver.launcher import TritonLaunch, TritonServer

    return TritonServer(TritonLaunch(grpc_port=free_port(), metrics_port=None))

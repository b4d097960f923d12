"""Starting and stopping real servers for tests: free ports, health waits, service processes, a
small real gallery; and the made-up embeddings the experts are sent. (Serving a service in this
process and calling it: tests/calls.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geoloc.common.ports import free_port
from geoloc.v1 import common_pb2


def wait_for_health(address: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Waits until the server at `address` reports SERVING; fails early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server at {address} exited with code {process.returncode}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"the server at {address} was not SERVING after {timeout_s} s")


def start_service(name: str, port: int | None = None, **env: str) -> tuple[subprocess.Popen, str]:
    """`python -m geoloc.<name>.server` on `port` (default: a free one), configured by
    GEOLOC_<NAME>_* `env`; returns the process and its address."""
    port, prefix = port or free_port(), f"GEOLOC_{name.upper()}_"
    environment = {
        **os.environ,
        f"{prefix}PORT": str(port),
        f"{prefix}METRICS_PORT": "none",
        f"{prefix}LOG_LEVEL": "warning",
        **{f"{prefix}{key.upper()}": value for key, value in env.items()},
    }
    process = subprocess.Popen([sys.executable, "-m", f"geoloc.{name}.server"], env=environment)
    return process, f"127.0.0.1:{port}"


def start_embedding_service(triton_url: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`python -m geoloc.embedding.server` against `triton_url`; returns the process and its address."""
    return start_service("embedding", triton_url=triton_url, **env)


def stop(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def small_gallery(folder: Path, points: int = 2000) -> Path:
    """A FAISS gallery of the first `points` real MP-16 coordinates (the geoclip package's), built
    under `folder`; returns the gallery's directory."""
    from geoloc.gallery.build import build_gallery, default_gallery_csv

    lines = default_gallery_csv().read_text().splitlines()[: points + 1]
    (folder / "gps.csv").write_text("\n".join(lines) + "\n")
    build_gallery(folder / "gps.csv", folder / "index", progress=False)
    return folder / "index"


def pooled_feature(seed: int, dim: int = 1280) -> list[float]:
    """A made-up EfficientNet-Lite2 feature: non-negative, as pooled ReLU6 activations are."""
    return np.random.default_rng(seed).gamma(1.0, 0.3, dim).astype(np.float32).tolist()


def made_up_embedding(values: list[float] | None = None, backbone: str = "efficientnet-lite2") -> common_pb2.Embedding:
    """An Embedding message of `values` (default: pooled_feature(0)) from `backbone`, version 1."""
    return common_pb2.Embedding(
        values=pooled_feature(0) if values is None else values,
        backbone=common_pb2.ModelInfo(name=backbone, version="1"),
    )


def bad_embeddings(request) -> list[tuple[object, str]]:
    """The embedding defects every expert refuses, as (request, field) cases; `request(values=...,
    backbone=...)` makes the service's request around an embedding."""
    return [
        (request(values=pooled_feature(0)[:512]), "embedding.values"),
        (request(values=[float("nan")] + pooled_feature(0)[1:]), "embedding.values"),
        (request(backbone="clip-vit-l14"), "embedding.backbone.name"),
    ]

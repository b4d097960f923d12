"""Starting and stopping real servers for tests: free ports, health waits, service processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geoloc.tritonserver.launcher import free_port


def wait_for_health(address: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Waits until the server at `address` reports SERVING; fails early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server at {address} exited with code {process.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
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
        f"{prefix}PORT": str(port), f"{prefix}METRICS_PORT": "none", f"{prefix}LOG_LEVEL": "warning",
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


def call_each(settings, spec, stub_class, rpc: str, requests, timeout_s: float = 60, ready_timeout_s: float = 120) -> list:
    """Serves `spec` in-process on loopback, sends each request in turn to `rpc`, stops the server.

    Returns each answer, or the grpc.aio.AioRpcError it got, in order.
    """
    import asyncio

    from geoloc.common.server import serving

    async def scenario():
        async with serving(settings, [spec], ready_timeout_s=ready_timeout_s) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = getattr(stub_class(channel), rpc)
                results = []
                for request in requests:
                    try:
                        results.append(await call(request, timeout=timeout_s))
                    except grpc.aio.AioRpcError as error:
                        results.append(error)
                return results

    return asyncio.run(scenario())


def pooled_feature(seed: int, dim: int = 1280) -> list[float]:
    """A made-up EfficientNet-Lite2 feature: non-negative, as pooled ReLU6 activations are."""
    return np.random.default_rng(seed).gamma(1.0, 0.3, dim).astype(np.float32).tolist()

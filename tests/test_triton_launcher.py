"""`geoloc triton` and its launcher run the real tritonserver binary from the nvidia-pytriton wheel."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from geoloc.common.ports import free_port
from geoloc.tritonserver.launcher import (
    TritonLaunch,
    TritonServer,
    TritonStartError,
    triton_command,
    triton_environment,
)


def test_the_command_loads_only_the_named_models_on_loopback(tmp_path):
    launch = TritonLaunch(models=("efficientnet_lite2",), grpc_port=9001, metrics_port=None, model_config_name="gpu")
    command = triton_command(launch, tmp_path)
    assert command[0].endswith("pytriton/tritonserver/bin/tritonserver")
    for flag in (
        "--model-control-mode=explicit",
        "--load-model=efficientnet_lite2",
        "--grpc-address=127.0.0.1",
        "--grpc-port=9001",
        "--allow-http=false",
        "--allow-metrics=false",
        "--model-config-name=gpu",
    ):
        assert flag in command
    env = triton_environment({"PATH": "/usr/bin"})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]


@pytest.mark.integration  # starts tritonserver
def test_a_model_missing_from_the_repository_fails_the_start_with_tritons_reason(tmp_path):
    triton = TritonServer(
        TritonLaunch(model_repository=tmp_path, models=("no_such_model",), grpc_port=free_port(), metrics_port=None)
    )
    triton.start()
    try:
        with pytest.raises(TritonStartError, match="no_such_model"):
            triton.wait_until_ready(timeout_s=60)
    finally:
        triton.stop()


@pytest.mark.integration  # starts tritonserver
def test_geoloc_triton_serves_until_sigterm_then_stops_cleanly():
    grpc_port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geoloc.cli",
            "triton",
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = process.stdout.readline()
        assert ready.startswith(f"Triton ready: gRPC 127.0.0.1:{grpc_port}, models efficientnet_lite2"), ready
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert 'nv_inference_count{model="efficientnet_lite2"' in response.read().decode()
        process.send_signal(signal.SIGTERM)
        rest = process.stdout.read()
        assert process.wait(60) == 0 and "Triton stopped (exit code 0)" in rest
    finally:
        if process.poll() is None:
            process.kill()

"""Runs the real `tritonserver` binary that the nvidia-pytriton wheel ships, on this machine.

    with TritonServer(TritonLaunch(grpc_port=8001)) as triton:   # started and READY
        client = InferenceServerClient(triton.grpc_url)
    # stopped: SIGTERM, in-flight requests finish, models unload

The wheel's binary needs a backend directory holding the Python backend next to the stub
built for this interpreter, and three environment fixes (docs/design.md §4): the wheel's bundled
libraries and this interpreter's own libpython on LD_LIBRARY_PATH, and this environment's
`bin` first on PATH, because the stub runs whichever `python3` it finds there and a foreign
numpy makes every output come back empty. Production runs NVIDIA's Triton container instead,
against the same model_repository/ (docs/triton.md).

`TritonLaunch(traces_url=...)` runs Triton in its OpenTelemetry trace mode, sending its spans over
OTLP/HTTP (the only protocol Triton exports with) to that URL; it traces exactly the requests that
carry a W3C trace context, which the embedding service sends when its own span is sampled
(geoloc.common.tracing), so Triton's spans join the caller's trace. `traces_url_from(environ)`
reads the URL from GEOLOC_TRITON_OTLP_TRACES_URL when the OTEL_* variables turn tracing on.

`TritonLaunch(tls=TritonTls(...))` makes the gRPC endpoint TLS only (--grpc-use-ssl), or mutual
TLS with a client CA (--grpc-use-ssl-mutual); the launcher's own readiness checks then connect
with the `ClientTls` the TritonTls names.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

from geoloc.common.tls import ClientTls
from geoloc.common.tracing import tracing_on
from geoloc.embedding.model_config import DEFAULT_MODEL_REPOSITORY, DEFAULT_MODELS

TRACES_URL_VARIABLE = "GEOLOC_TRITON_OTLP_TRACES_URL"


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with its log's tail."""


@dataclass(frozen=True)
class TritonTls:
    """TLS on Triton's gRPC endpoint: its certificate and key, and with `client_ca_file` mutual TLS
    (clients must present a certificate that CA signed).

    `readiness_client` is what the launcher's own readiness checks connect with: the CA that
    signed `cert_file` and, with mutual TLS, a client certificate that `client_ca_file` signed.
    """

    cert_file: Path
    key_file: Path
    readiness_client: ClientTls
    client_ca_file: Path | None = None

    def flags(self) -> list[str]:
        """tritonserver's flags for this TLS (checked against tritonserver 2.51's --help)."""
        flags = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={Path(self.cert_file).resolve()}",
            f"--grpc-server-key={Path(self.key_file).resolve()}",
        ]
        if self.client_ca_file is not None:
            flags += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={Path(self.client_ca_file).resolve()}"]
        return flags


@dataclass(frozen=True)
class TritonLaunch:
    """What to start: which models from which repository, on which loopback ports."""

    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    models: Sequence[str] = DEFAULT_MODELS
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    metrics_port: int | None = 8002
    http_port: int | None = None
    # Picks configs/<name>.pbtxt over config.pbtxt in each model that has it ("gpu").
    model_config_name: str | None = None
    # How long in-flight requests may run after SIGTERM before Triton exits anyway.
    exit_timeout_s: int = 10
    extra_args: Sequence[str] = field(default_factory=tuple)
    # None: plaintext gRPC.
    tls: TritonTls | None = None
    # A collector's OTLP/HTTP traces URL (http://host:4318/v1/traces); None: Triton does not trace.
    traces_url: str | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


def pytriton_root() -> Path:
    """The folder of the nvidia-pytriton wheel that holds bin/, backends/ and the stubs."""
    spec = find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonStartError("nvidia-pytriton is not installed: it ships the tritonserver binary")
    return Path(spec.origin).parent / "tritonserver"


def prepare_backend_directory(destination: Path) -> Path:
    """Fills `destination` with a Python backend whose stub matches this interpreter; returns it."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonStartError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    python_backend = destination / "python"
    shutil.copytree(root / "backends" / "python", python_backend, dirs_exist_ok=True)
    shutil.copy2(stub, python_backend / stub.name)
    return destination


def triton_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment tritonserver and its Python stubs need (the three fixes above)."""
    env = dict(os.environ if base is None else base)
    bundled_libs = pytriton_root().parent.parent / "nvidia_pytriton.libs"
    own_libpython = sysconfig.get_config_var("LIBDIR")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (own_libpython, str(bundled_libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def triton_command(launch: TritonLaunch, backend_directory: Path) -> list[str]:
    command = [
        str(pytriton_root() / "bin" / "tritonserver"),
        f"--model-repository={Path(launch.model_repository).resolve()}",
        f"--backend-directory={backend_directory}",
        # Explicit mode loads only the named models, so a model whose weights are absent here
        # (clip_vit_l14) can sit in the repository without failing the start.
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in launch.models),
        f"--grpc-address={launch.host}",
        f"--grpc-port={launch.grpc_port}",
        f"--exit-timeout-secs={launch.exit_timeout_s}",
        "--allow-gpu-metrics=false",
        "--log-info=true",
    ]
    if launch.http_port is None:
        command.append("--allow-http=false")
    else:
        command += [f"--http-address={launch.host}", f"--http-port={launch.http_port}"]
    if launch.metrics_port is None:
        command.append("--allow-metrics=false")
    else:
        command += [f"--metrics-address={launch.host}", f"--metrics-port={launch.metrics_port}"]
    if launch.model_config_name:
        command.append(f"--model-config-name={launch.model_config_name}")
    if launch.tls is not None:
        command += launch.tls.flags()
    if launch.traces_url is not None:
        command += trace_flags(launch.traces_url)
    return command + list(launch.extra_args)


def trace_flags(traces_url: str, service_name: str = "triton") -> list[str]:
    """tritonserver's flags for its OpenTelemetry mode: spans of the requests that carry a trace
    context (rate=0 starts no trace of its own; a propagated context is always traced), with
    their timestamps, sent to `traces_url`."""
    return [
        "--trace-config=mode=opentelemetry",
        "--trace-config=rate=0",
        "--trace-config=count=-1",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=opentelemetry,url={traces_url}",
        f"--trace-config=opentelemetry,resource=service.name={service_name}",
    ]


def traces_url_from(environ: Mapping[str, str]) -> str | None:
    """Where Triton sends its spans: GEOLOC_TRITON_OTLP_TRACES_URL, when the OTEL_* variables turn
    tracing on; else None."""
    url = environ.get(TRACES_URL_VARIABLE) or None
    return url if url is not None and tracing_on(environ) else None


class TritonServer:
    """One tritonserver process: `start`, `wait_until_ready`, `stop` (or use it as a context)."""

    def __init__(self, launch: TritonLaunch, workdir: Path | None = None):
        self.launch = launch
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="geoloc-triton-")) if workdir is None else workdir
        self.log_path = self.workdir / "tritonserver.log"
        self.process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return self.launch.grpc_url

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this TritonServer was already started")
        backends = prepare_backend_directory(self.workdir / "backends")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                triton_command(self.launch, backends),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=triton_environment(),
                start_new_session=True,  # a Ctrl-C meant for us must not reach it first
            )

    def wait_until_ready(self, timeout_s: float = 180.0) -> None:
        """Returns once the server and every model are READY; raises TritonStartError otherwise."""
        import tritonclient.grpc as triton_grpc

        deadline = time.monotonic() + timeout_s
        tls = self.launch.tls.readiness_client if self.launch.tls is not None else None
        if tls is None:
            client = triton_grpc.InferenceServerClient(self.grpc_url)
        else:
            client = triton_grpc.InferenceServerClient(
                self.grpc_url, creds=tls.credentials(), channel_args=tls.channel_options() or None
            )
        try:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise TritonStartError(f"tritonserver exited with code {self.returncode}\n{self.log_tail()}")
                if self._all_ready(client):
                    return
                if time.monotonic() > deadline:
                    raise TritonStartError(f"tritonserver not ready after {timeout_s:.0f} s\n{self.log_tail()}")
                time.sleep(0.2)
        finally:
            client.close()

    def _all_ready(self, client) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return client.is_server_ready(client_timeout=2) and all(
                client.is_model_ready(name, client_timeout=2) for name in self.launch.models
            )
        except InferenceServerException:
            return False  # not listening yet

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, then wait for in-flight requests and model unloading; SIGKILL past the timeout.

        Returns tritonserver's exit code (0 for a clean stop), or None if it never started.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s if timeout_s is not None else self.launch.exit_timeout_s + 20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._own_workdir:
            shutil.rmtree(self.workdir / "backends", ignore_errors=True)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

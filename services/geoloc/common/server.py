"""The server factory: one way to build, start and stop every geoloc gRPC server.

    server, port = create_server(settings, [spec])   # inside a running event loop
    await server.start()                             # listening; health NOT_SERVING while warming up
    await server.wait_until_ready()                  # health SERVING
    await server.shutdown()                          # NOT_SERVING, drain, refuse, finish in-flight

`run_service(SettingsClass, build_specs)` is a service process's `main`: settings from the
environment (exit 2 naming the bad variable), then `run_server`, which serves until SIGTERM
or SIGINT triggers the graceful shutdown.

With `tls_cert_file` and `tls_key_file` the gRPC port serves TLS only, and with
`tls_client_ca_file` it requires client certificates (mutual TLS). `health_port` opens a second,
plaintext port that serves only grpc.health.v1, from the same health servicer, for probes that
cannot speak TLS (Kubernetes' gRPC probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from geoloc.common.admission import Admission
from geoloc.common.interceptors import ServerRuntimeInterceptor
from geoloc.common.logs import configure_logging, get_logger
from geoloc.common.metrics import ServerMetrics, start_metrics_http_server
from geoloc.common.settings import ServerSettings, SettingsError, load_settings
from geoloc.common.tls import server_credentials
from geoloc.common.tracing import TracingSettingsError, server_interceptors, start_tracing, tracing_on

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The empty name is the whole server's health, which Kubernetes' gRPC probes ask for.
OVERALL = ""


async def _nothing_to_do() -> None:
    return None


def _no_metrics(_metrics: ServerMetrics) -> None:
    return None


@dataclass(frozen=True)
class ServiceSpec:
    """A gRPC service to mount: its full name, how to add its servicer, and how to warm it up.

    `warm_up` loads the model or index and runs a real inference whose output it checks;
    the service reports NOT_SERVING, and its calls get UNAVAILABLE, until it returns. It
    runs inside the server's event loop: open channels there, not in a constructor.
    `close` releases what the service holds (channels, files) once the server has stopped.
    `bind_metrics` is given the server's metrics before it starts, to register the service's own.
    """

    name: str
    register: Callable[[grpc.aio.Server], None]
    warm_up: Callable[[], Awaitable[None]] = _nothing_to_do
    close: Callable[[], Awaitable[None]] = _nothing_to_do
    bind_metrics: Callable[[ServerMetrics], None] = _no_metrics


def service_name(pb2_module, short_name: str) -> str:
    """The full name of a service defined in a generated module, e.g. 'geoloc.v1.GalleryService'."""
    return pb2_module.DESCRIPTOR.services_by_name[short_name].full_name


def servicer_spec(pb2_module, short_name: str, add_to_server: Callable, servicer: object) -> ServiceSpec:
    """The ServiceSpec of a servicer: mounted with its generated `add_..._to_server`, warmed up
    and closed by its own `warm_up` and `close` coroutines, and given the server's metrics by its
    `bind_metrics`, where it has them."""
    return ServiceSpec(
        name=service_name(pb2_module, short_name),
        register=lambda server: add_to_server(servicer, server),
        warm_up=getattr(servicer, "warm_up", _nothing_to_do),
        close=getattr(servicer, "close", _nothing_to_do),
        bind_metrics=getattr(servicer, "bind_metrics", _no_metrics),
    )


class GeolocServer:
    """A gRPC aio server with health, reflection, metrics, the runtime interceptor and a lifecycle."""

    def __init__(self, settings: ServerSettings, services: Sequence[ServiceSpec]):
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"a service is mounted twice: {names}")
        self.settings = settings
        self.services = tuple(services)
        self.metrics = ServerMetrics()
        self.health = health_aio.HealthServicer()
        self._ready: set[str] = set()
        self._log = get_logger("geoloc.server")
        self._warm_up_task: asyncio.Task | None = None
        self._shutdown_task: asyncio.Task | None = None
        self._metrics_httpd = None
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self.health_server: grpc.aio.Server | None = None
        options = [
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_send_message_length", settings.max_send_message_bytes),
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
            ("grpc.http2.min_ping_interval_without_data_ms", int(settings.min_client_ping_interval_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Without this a second server on the same port would silently share its traffic.
            ("grpc.so_reuseport", 0),
        ]
        if settings.max_connection_age_s is not None:
            options += [
                ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(settings.grace_period_s * 1000)),
            ]
        interceptor = ServerRuntimeInterceptor(
            self.metrics,
            is_ready=self._ready.__contains__,
            gated_services=frozenset(names),
            log_requests=settings.log_requests,
            max_call_s=settings.max_call_s,
            admission=Admission(
                settings.max_in_flight, " and ".join(n.rsplit(".", 1)[-1] for n in names) or "this server"
            ),
        )
        # Tracing, when on, runs outermost: the runtime interceptor's log lines fall inside its span.
        interceptors = [*server_interceptors(), interceptor]
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=options,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        for spec in self.services:
            spec.bind_metrics(self.metrics)
            spec.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        if settings.tls:
            # Read once, here: a renewed certificate takes effect when the process restarts.
            credentials = server_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
            self.port = self.server.add_secure_port(settings.address, credentials)
        else:
            self.port = self.server.add_insecure_port(settings.address)
        if self.port == 0:
            raise OSError(f"could not bind gRPC port {settings.address}")
        if settings.health_port is not None:
            # The same servicer instance, so this port reports exactly the main server's health.
            # Behind the same interceptor, so that probes are counted and logged as before.
            self.health_server = grpc.aio.server(interceptors=interceptors, options=options)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            health_address = f"{settings.host}:{settings.health_port}"
            self.health_port = self.health_server.add_insecure_port(health_address)
            if self.health_port == 0:
                raise OSError(f"could not bind the health port {health_address}")

    async def start(self) -> None:
        """Starts listening and serving /metrics, then warms the services up in the background."""
        for name in self._health_names():
            await self.health.set(name, NOT_SERVING)
            self.metrics.set_ready(name, False)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        if self.settings.metrics_port is not None:
            self._metrics_httpd, self.metrics_port = start_metrics_http_server(
                self.metrics, self.settings.host, self.settings.metrics_port
            )
        self._log.info(
            "server_started",
            address=self.settings.address,
            port=self.port,
            tls="mutual" if self.settings.tls_client_ca_file else "on" if self.settings.tls else "off",
            health_port=self.health_port,
            metrics_port=self.metrics_port,
            services=[s.name for s in self.services],
        )
        self._warm_up_task = asyncio.create_task(self._warm_up())

    def _health_names(self) -> tuple[str, ...]:
        return (OVERALL, *(s.name for s in self.services))

    async def _warm_up(self) -> None:
        for spec in self.services:
            started = asyncio.get_running_loop().time()
            await spec.warm_up()
            self._ready.add(spec.name)
            await self.health.set(spec.name, SERVING)
            self.metrics.set_ready(spec.name, True)
            self._log.info(
                "service_ready", service=spec.name, warm_up_s=round(asyncio.get_running_loop().time() - started, 3)
            )
        await self.health.set(OVERALL, SERVING)
        self.metrics.set_ready(OVERALL, True)

    async def wait_until_ready(self, timeout_s: float | None = None) -> None:
        """Returns once every service is SERVING; raises the warm-up's exception if it failed."""
        if self._warm_up_task is None:
            raise RuntimeError("start() the server first")
        await asyncio.wait_for(asyncio.shield(self._warm_up_task), timeout_s)

    def shutdown(self, grace_s: float | None = None) -> asyncio.Task:
        """Starts the graceful shutdown once (later calls return the same task); await it to wait.

        Health turns NOT_SERVING first, the server keeps serving for `drain_s` so that
        load balancers notice, then refuses new calls and lets those in flight run for up
        to the grace period before cancelling them.
        """
        if self._shutdown_task is None:
            grace = self.settings.grace_period_s if grace_s is None else grace_s
            self._shutdown_task = asyncio.ensure_future(self._shut_down(grace))
        return self._shutdown_task

    async def _shut_down(self, grace_s: float) -> None:
        self._log.info("shutdown_started", grace_period_s=grace_s, drain_s=self.settings.drain_s)
        await self.health.enter_graceful_shutdown()
        self._ready.clear()
        for name in self._health_names():
            self.metrics.set_ready(name, False)
        if self.settings.drain_s:
            await asyncio.sleep(self.settings.drain_s)
        await self.server.stop(grace_s)
        if self.health_server is not None:
            # Stopped after the main server, so that probes read NOT_SERVING, not a refused
            # connection, while calls in flight finish.
            await self.health_server.stop(0)
        if self._warm_up_task is not None and not self._warm_up_task.done():
            self._warm_up_task.cancel()
        for spec in self.services:
            try:
                await spec.close()
            except Exception:
                self._log.exception("service_close_failed", service=spec.name)
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
        self._log.info("shutdown_finished")

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()
        if self._shutdown_task is not None:
            await self._shutdown_task


def create_server(settings: ServerSettings, services: Sequence[ServiceSpec]) -> tuple[GeolocServer, int]:
    """Builds a server and binds its port (call inside a running event loop); returns it and the port."""
    server = GeolocServer(settings, services)
    return server, server.port


@contextlib.asynccontextmanager
async def serving(
    settings: ServerSettings,
    services: Sequence[ServiceSpec],
    ready_timeout_s: float | None = 60.0,
    grace_s: float = 1.0,
) -> AsyncIterator[tuple[GeolocServer, int]]:
    """A started and warm server in this event loop, and its port; shut down on exit.

    For tools and tests that run a service in-process; a service's own process uses `serve`.
    """
    server, port = create_server(settings, services)
    await server.start()
    try:
        await server.wait_until_ready(ready_timeout_s)
        yield server, port
    finally:
        await server.shutdown(grace_s=grace_s)


async def serve(settings: ServerSettings, services: Sequence[ServiceSpec]) -> int:
    """Runs a server until SIGTERM or SIGINT; returns the process exit code (1 if warm-up failed)."""
    log = get_logger("geoloc.server")
    server, _ = create_server(settings, services)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.shutdown)
    await server.start()
    exit_code = 0
    try:
        await server.wait_until_ready()
    except asyncio.CancelledError:
        pass  # shut down before the warm-up finished
    except Exception:
        log.exception("warm_up_failed")
        exit_code = 1
        server.shutdown(grace_s=0)
    await server.wait_for_termination()
    return exit_code


def run_server(settings: ServerSettings, services: Sequence[ServiceSpec], service_name: str = "geoloc") -> int:
    """Serves with these settings in a fresh event loop, logging as configured and tracing as the
    OTEL_* variables say (as `service_name`), until told to stop; the spans not yet sent are
    flushed before it returns."""
    configure_logging(settings.log_level, settings.log_format)
    tracing = start_tracing(service_name)
    try:
        return asyncio.run(serve(settings, services))
    finally:
        if tracing is not None:
            tracing.shutdown()


SettingsT = TypeVar("SettingsT", bound=ServerSettings)
EXIT_BAD_SETTINGS = 2


def run_service(settings_class: type[SettingsT], build_specs: Callable[[SettingsT], Sequence[ServiceSpec]]) -> int:
    """A service process's `main`: read its settings from the environment, then serve.

    Invalid settings stop the process before anything starts, with exit code 2 and one
    line on stderr naming each bad variable.
    """
    try:
        settings = load_settings(settings_class)
        tracing_on()
    except (SettingsError, TracingSettingsError) as exc:
        print(f"geoloc: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return run_server(settings, build_specs(settings), process_name(settings_class))


def process_name(settings_class: type[ServerSettings]) -> str:
    """The service's name in traces: its settings' prefix, GEOLOC_GALLERY_ -> geoloc-gallery."""
    prefix = settings_class.model_config.get("env_prefix", "GEOLOC_")
    return prefix.strip("_").lower().replace("_", "-")

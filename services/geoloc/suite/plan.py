"""The plan of the suite on one machine: what each component runs, where it listens, what it needs.

Everything here is pure (no process is started, no port is touched), so that the choice of
components, their ports and the order of their start can be tested as functions.

Dependencies: embedding needs Triton; the orchestrator needs embedding and every expert
(gallery, sampler, tokens, text) that is in the plan, and is told `none` for the others, which it
then reports as SKIPPED. The experts need nothing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from geoloc.experts import EXPERT_SERVICES, SERVICE_TABLE, SERVICES_BY_NAME
from geoloc.suite import COMPONENTS

HOST = "127.0.0.1"
# What a component cannot run without; `--only` adds these, `--without` may not remove them.
REQUIRED: Mapping[str, tuple[str, ...]] = {"embedding": ("triton",), "orchestrator": ("embedding",)}
DEFAULT_TRITON_MODELS = ("efficientnet_lite2",)

HealthKind = Literal["grpc", "triton"]


class PlanError(ValueError):
    """The components or ports asked for do not make a suite that can start; the message says why."""


@dataclass(frozen=True)
class SuiteOptions:
    """Ports and Triton's models. Each service listens on base_port + its port_offset (SERVICE_TABLE),
    its metrics on metrics_base_port + the same offset; None for a metrics port turns that /metrics
    endpoint off."""

    base_port: int = 50051
    metrics_base_port: int | None = 9464
    triton_port: int = 8001
    triton_metrics_port: int | None = 8002
    triton_http_port: int | None = None
    triton_models: tuple[str, ...] = DEFAULT_TRITON_MODELS
    triton_config_name: str | None = None
    # A model bundle (training/bundle.py): Triton serves its model, each service loads its files.
    bundle: Path | None = None


@dataclass(frozen=True)
class Component:
    """One process of the suite.

    `env` holds only what the suite sets (ports, addresses); the process gets it over the
    caller's environment, so other GEOLOC_* settings pass through. `needs` are the names
    that must be SERVING before this one starts. `models` are the Triton models whose
    readiness makes Triton healthy.
    """

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(hash=False)
    port: int
    metrics_port: int | None
    needs: tuple[str, ...] = ()
    health: HealthKind = "grpc"
    models: tuple[str, ...] = ()
    host: str = HOST

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def select(only: Iterable[str] | None = None, without: Iterable[str] | None = None) -> tuple[str, ...]:
    """The components to run, in COMPONENTS order.

    `only` picks those and adds what they require (`--only embedding` runs Triton too);
    `without` drops those from the full suite and refuses to drop one that a remaining
    component requires. Unknown names raise PlanError.
    """
    if only is not None and without is not None:
        raise PlanError("give --only or --without, not both")
    for name in (*(only or ()), *(without or ())):
        if name not in COMPONENTS:
            raise PlanError(f"unknown component {name!r} (one of: {', '.join(COMPONENTS)})")
    if only is not None:
        chosen = set(only)
        pending = list(chosen)
        while pending:
            for dependency in REQUIRED.get(pending.pop(), ()):
                if dependency not in chosen:
                    chosen.add(dependency)
                    pending.append(dependency)
    else:
        chosen = set(COMPONENTS) - set(without or ())
        for name in sorted(chosen, key=COMPONENTS.index):
            missing = [d for d in REQUIRED.get(name, ()) if d not in chosen]
            if missing:
                raise PlanError(f"{name} needs {', '.join(missing)}: leave it out too, or keep {', '.join(missing)}")
    return tuple(name for name in COMPONENTS if name in chosen)


def service_port(options: SuiteOptions, name: str) -> int:
    return options.base_port + SERVICES_BY_NAME[name].port_offset


def metrics_port(options: SuiteOptions, name: str) -> int | None:
    if name == "triton":
        return options.triton_metrics_port
    return None if options.metrics_base_port is None else options.metrics_base_port + SERVICES_BY_NAME[name].port_offset


def _service_env(name: str, options: SuiteOptions) -> dict[str, str]:
    prefix = f"GEOLOC_{name.upper()}_"
    metrics = metrics_port(options, name)
    return {
        f"{prefix}HOST": HOST,
        f"{prefix}PORT": str(service_port(options, name)),
        f"{prefix}METRICS_PORT": "none" if metrics is None else str(metrics),
        # Log lines reach the log file as they happen, not when a block buffer fills.
        "PYTHONUNBUFFERED": "1",
    }


# The services that load their models from a bundle themselves, checking it (artifacts/bundles.py).
BUNDLE_SERVICES = tuple(s.name for s in SERVICE_TABLE if s.bundle)


def read_bundle(root: Path) -> dict:
    """A bundle's bundle.json (its files, its backbone); PlanError when there is none."""
    path = Path(root) / "bundle.json"
    if not path.is_file():
        raise PlanError(f"{root}: not a model bundle (no bundle.json; `geoloc bundle build` makes one)")
    return json.loads(path.read_text())


def _bundle_env(name: str, options: SuiteOptions) -> dict[str, str]:
    if options.bundle is None or name not in BUNDLE_SERVICES:
        return {}
    read_bundle(options.bundle)  # a PlanError now, before anything starts, when it is not a bundle
    return {f"GEOLOC_{name.upper()}_BUNDLE": str(options.bundle.resolve())}


def build_plan(selected: Sequence[str], options: SuiteOptions, run_dir: Path) -> list[Component]:
    """The components of `selected` (see `select`), in start order; raises PlanError on a port clash.

    Triton runs as the nvidia-pytriton wheel's `tritonserver` binary itself (the launcher's
    command line, not the `geoloc triton` wrapper), so that the recorded pid is the server's
    and a SIGTERM reaches it directly; its Python backend is prepared under run_dir/triton.
    """
    components: list[Component] = []
    for name in selected:
        if name == "triton":
            components.append(_triton(options, run_dir))
            continue
        env = {**_service_env(name, options), **_bundle_env(name, options)}
        needs: tuple[str, ...] = ()
        if name == "embedding":
            needs = ("triton",)
            env["GEOLOC_EMBEDDING_TRITON_URL"] = f"{HOST}:{options.triton_port}"
            # The embedding service calls the first model Triton loads, and its text tower
            # (<model>_text) when that is loaded too; a bundle names both itself.
            if options.bundle is None:
                env["GEOLOC_EMBEDDING_MODEL_NAME"] = options.triton_models[0]
                if f"{options.triton_models[0]}_text" in options.triton_models:
                    env["GEOLOC_EMBEDDING_TEXT_MODEL_NAME"] = f"{options.triton_models[0]}_text"
        elif name == "orchestrator":
            expert_services = tuple(s for s in EXPERT_SERVICES if s in selected)
            needs = ("embedding", *expert_services)
            env["GEOLOC_ORCHESTRATOR_EMBEDDING_ADDRESS"] = f"{HOST}:{service_port(options, 'embedding')}"
            for service in EXPERT_SERVICES:
                address = f"{HOST}:{service_port(options, service)}" if service in expert_services else "none"
                env[f"GEOLOC_ORCHESTRATOR_{SERVICES_BY_NAME[service].address_setting.upper()}"] = address
        components.append(
            Component(
                name=name,
                command=(sys.executable, "-m", f"geoloc.{name}.server"),
                env=env,
                port=service_port(options, name),
                metrics_port=metrics_port(options, name),
                needs=needs,
            )
        )
    _check_ports(components, options)
    return start_order(components)


def triton_backend_directory(run_dir: Path) -> Path:
    return run_dir / "triton" / "backends"


def _triton(options: SuiteOptions, run_dir: Path) -> Component:
    from geoloc.tritonserver.launcher import TritonLaunch, traces_url_from, triton_command, triton_environment

    if not options.triton_models:
        raise PlanError("Triton needs at least one model")
    bundle = {} if options.bundle is None else {"model_repository": options.bundle.resolve() / "model_repository"}
    launch = TritonLaunch(
        **bundle,
        models=options.triton_models,
        host=HOST,
        grpc_port=options.triton_port,
        metrics_port=options.triton_metrics_port,
        http_port=options.triton_http_port,
        model_config_name=options.triton_config_name,
        traces_url=traces_url_from(os.environ),
    )
    full = triton_environment(dict(os.environ))
    return Component(
        name="triton",
        command=tuple(triton_command(launch, triton_backend_directory(run_dir))),
        env={key: full[key] for key in ("LD_LIBRARY_PATH", "PATH")},
        port=options.triton_port,
        metrics_port=options.triton_metrics_port,
        health="triton",
        models=tuple(options.triton_models),
    )


def _check_ports(components: Sequence[Component], options: SuiteOptions) -> None:
    owners: dict[int, str] = {}
    for c in components:
        ports = [(c.port, c.name), (c.metrics_port, f"{c.name} metrics")]
        if c.name == "triton" and options.triton_http_port is not None:
            ports.append((options.triton_http_port, "triton http"))
        for port, what in ports:
            if port is None:
                continue
            if not 0 < port < 65536:
                raise PlanError(f"port {port} of {what} is not in 1..65535")
            if port in owners:
                raise PlanError(f"port {port} is planned for both {owners[port]} and {what}")
            owners[port] = what


class _Node(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def needs(self) -> Sequence[str]: ...


NodeT = TypeVar("NodeT", bound=_Node)


def start_order(nodes: Sequence[NodeT]) -> list[NodeT]:
    """`nodes` sorted so that each comes after what it needs; ties keep COMPONENTS order.

    A need that is not among `nodes` is ignored (it is outside this plan); a cycle raises
    PlanError. `geoloc down` stops in the reverse of this order.
    """
    rank = {name: i for i, name in enumerate(COMPONENTS)}
    by_name = {n.name: n for n in nodes}
    waiting = {n.name: {d for d in n.needs if d in by_name} for n in nodes}
    order: list[NodeT] = []
    while waiting:
        ready = [name for name, deps in waiting.items() if not deps]
        if not ready:
            raise PlanError(f"dependency cycle among {', '.join(sorted(waiting))}")
        name = min(ready, key=lambda n: (rank.get(n, len(rank)), n))
        order.append(by_name[name])
        del waiting[name]
        for deps in waiting.values():
            deps.discard(name)
    return order


def startable(plan: Sequence[Component], started: Iterable[str], healthy: Iterable[str]) -> list[Component]:
    """The components of `plan` not yet started whose every need is SERVING, in plan order."""
    started, healthy = set(started), set(healthy)
    return [c for c in plan if c.name not in started and all(d in healthy for d in c.needs)]

"""Bringing the suite up and down, and reading its status, from the run directory's state.

up:     refuses if a recorded suite still runs (a stale record is removed), refuses ports
        already taken, then starts each component once every component it needs is SERVING,
        recording each start; returns once all are SERVING. On a failure, a timeout or an
        interrupt it stops what it started and raises SuiteError with the failing logs' tails.
down:   stops the recorded components in reverse dependency order and removes the record.
status: per recorded component: pid still ours?, health on its port, uptime.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from geoloc.suite.health import SERVING, Health, Probe
from geoloc.suite.plan import Component, start_order, startable, triton_backend_directory
from geoloc.suite.processes import StopOutcome, is_ours, log_tail, spawn, start_ticks, stop
from geoloc.suite.state import Running, SuiteState, load_state, now_iso, run_lock

Say = Callable[[str], None]
POLL_S = 0.5
# When up gives up, how long each started component may take to stop on SIGTERM.
ABORT_GRACE_S = 15.0


class SuiteError(RuntimeError):
    """The suite could not be brought up or down; the message says why, with log tails where useful."""


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    alive: bool
    port: int
    metrics_port: int | None
    health: Health
    uptime_s: float | None
    log: str

    @property
    def ok(self) -> bool:
        return self.alive and self.health == SERVING


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port now (a port in TIME_WAIT after a stop counts as free)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def up(plan: Sequence[Component], run_dir: Path, timeout_s: float = 300.0, say: Say = print) -> SuiteState:
    """Brings `plan` up (see the module's docstring); returns the recorded state, all SERVING."""
    run_dir = run_dir.resolve()
    with run_lock(run_dir):
        _refuse_if_running(run_dir, say)
        # A port held by someone else would answer our health checks for them.
        taken = [
            f"{port} ({c.name})"
            for c in plan
            for port in (c.port, c.metrics_port)
            if port is not None and port_taken(c.host, port)
        ]
        if taken:
            raise SuiteError(f"ports already in use: {', '.join(taken)}; stop what holds them or pick other ports")
        if any(c.name == "triton" for c in plan):
            from geoloc.tritonserver.launcher import TritonStartError, prepare_backend_directory

            try:
                prepare_backend_directory(triton_backend_directory(run_dir))
            except (TritonStartError, OSError) as exc:
                raise SuiteError(f"cannot prepare Triton's Python backend: {exc}") from None
        state = SuiteState(run_dir)
        children: dict[str, subprocess.Popen] = {}
        try:
            _start_all(plan, state, children, timeout_s, say)
        except BaseException as exc:
            for record in reversed(start_order(state.components)):
                stop(record.pid, record.start_ticks, ABORT_GRACE_S, children.get(record.name))
            state.remove()
            if isinstance(exc, KeyboardInterrupt):
                raise SuiteError("interrupted: stopped what had started") from None
            raise
        return state


def _refuse_if_running(run_dir: Path, say: Say) -> None:
    try:
        previous = load_state(run_dir)
    except ValueError as exc:
        raise SuiteError(str(exc)) from None
    if previous is None:
        return
    alive = [f"{c.name} (pid {c.pid})" for c in previous.components if is_ours(c.pid, c.start_ticks)]
    if alive:
        raise SuiteError(f"a suite is already running from {run_dir}: {', '.join(alive)}; `geoloc down` stops it")
    previous.remove()
    say(f"removed a stale {previous.path} (none of its processes runs any more)")


def _start_all(
    plan: Sequence[Component], state: SuiteState, children: dict[str, subprocess.Popen], timeout_s: float, say: Say
) -> None:
    started_at = time.monotonic()
    deadline = started_at + timeout_s
    healthy: set[str] = set()
    probes: dict[str, Probe] = {}
    try:
        while True:
            for component in startable(plan, children, healthy):
                log = state.run_dir / "logs" / f"{component.name}.log"
                try:
                    child = spawn(component.command, component.env, log)
                except OSError as exc:
                    raise SuiteError(
                        f"cannot start {component.name}: {exc}\nstopped every component that had started"
                    ) from None
                children[component.name] = child
                state.components.append(
                    Running(
                        name=component.name,
                        pid=child.pid,
                        start_ticks=start_ticks(child.pid),
                        command=list(component.command),
                        host=component.host,
                        port=component.port,
                        metrics_port=component.metrics_port,
                        health=component.health,
                        models=list(component.models),
                        needs=list(component.needs),
                        log=str(log),
                        started_at=now_iso(),
                    )
                )
                state.save()
                probes[component.name] = Probe(component.address, component.health, component.models)
                say(f"started {component.name} (pid {child.pid}) on {component.address}; log {log}")
            for name, child in children.items():
                if child.poll() is not None:
                    raise SuiteError(_failure(state, [name], f"{name} exited with code {child.returncode}"))
            for name in children.keys() - healthy:
                if probes[name].check(timeout_s=1.0) == SERVING:
                    healthy.add(name)
                    say(f"{name} SERVING after {time.monotonic() - started_at:.0f} s")
            if len(healthy) == len(plan):
                return
            if time.monotonic() > deadline:
                late = [c.name for c in plan if c.name not in healthy]
                raise SuiteError(
                    _failure(
                        state,
                        [n for n in late if n in children],
                        f"not SERVING after {timeout_s:.0f} s: {', '.join(late)}",
                    )
                )
            time.sleep(POLL_S)
    finally:
        for probe in probes.values():
            probe.close()


def _failure(state: SuiteState, names: Sequence[str], headline: str) -> str:
    parts = [headline]
    for record in state.components:
        if record.name in names:
            parts.append(f"--- last lines of {record.log}\n{log_tail(Path(record.log))}")
    parts.append("stopped every component that had started")
    return "\n".join(parts)


def down(run_dir: Path, grace_s: float = 30.0, say: Say = print) -> list[tuple[str, StopOutcome]]:
    """Stops the recorded suite in reverse dependency order and removes its record.

    Returns what happened to each component (empty when nothing was recorded). A process
    that cannot be signalled raises SuiteError and keeps the record.
    """
    run_dir = run_dir.resolve()
    with run_lock(run_dir):
        try:
            state = load_state(run_dir)
        except ValueError as exc:
            raise SuiteError(str(exc)) from None
        if state is None:
            return []
        outcomes = []
        for record in reversed(start_order(state.components)):
            try:
                outcome = stop(record.pid, record.start_ticks, grace_s)
            except PermissionError as exc:
                raise SuiteError(f"cannot signal {record.name} (pid {record.pid}): {exc}") from None
            say(f"{record.name} (pid {record.pid}): {outcome}")
            outcomes.append((record.name, outcome))
        state.remove()
        return outcomes


def status(run_dir: Path, timeout_s: float = 2.0) -> tuple[SuiteState, list[ComponentStatus]] | None:
    """Each recorded component's status, in start order; None when no suite is recorded.

    Health is asked on the component's port even when its process is gone, so that a port
    answered by someone else shows; `ComponentStatus.ok` needs both alive and SERVING.
    """
    try:
        state = load_state(run_dir.resolve())
    except ValueError as exc:
        raise SuiteError(str(exc)) from None
    if state is None:
        return None
    now = datetime.now(UTC)
    rows = []
    for record in state.components:
        alive = is_ours(record.pid, record.start_ticks)
        with Probe(record.address, record.health, record.models) as probe:
            health = probe.check(timeout_s)
        rows.append(
            ComponentStatus(
                name=record.name,
                pid=record.pid,
                alive=alive,
                port=record.port,
                metrics_port=record.metrics_port,
                health=health,
                uptime_s=(now - record.started).total_seconds() if alive else None,
                log=record.log,
            )
        )
    return state, rows

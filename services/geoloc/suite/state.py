"""The run directory: `suite.json`, what `geoloc up` started, and a lock for up and down.

suite.json (version 1) holds the suite's start time and, per component in the order started:
name, pid, start_ticks (the process's start time, see processes.py), command, host, port,
metrics_port, health kind, Triton models, needs, log path and started_at (ISO 8601, UTC).
`geoloc up` rewrites it after each start, so that `geoloc down` finds every process even if
up itself was killed midway.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from geoloc.artifacts.files import written_atomically

STATE_FILE = "suite.json"
LOCK_FILE = ".lock"
VERSION = 1


class SuiteBusy(RuntimeError):
    """Another `geoloc up` or `geoloc down` holds this run directory."""


@dataclass(frozen=True)
class Running:
    """One started component as recorded in the state file."""

    name: str
    pid: int
    start_ticks: int | None
    command: list[str]
    host: str
    port: int
    metrics_port: int | None
    health: str
    models: list[str]
    needs: list[str]
    log: str
    started_at: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at)


@dataclass
class SuiteState:
    run_dir: Path
    started_at: str = field(default_factory=lambda: now_iso())
    components: list[Running] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.run_dir / STATE_FILE

    def save(self) -> None:
        """Writes the file atomically: a reader sees the old or the new state, never half of one."""
        document = {
            "version": VERSION,
            "started_at": self.started_at,
            "components": [asdict(c) for c in self.components],
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with written_atomically(self.path) as stream:
            stream.write((json.dumps(document, indent=2) + "\n").encode("utf-8"))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_state(run_dir: Path) -> SuiteState | None:
    """The state in `run_dir`, or None when there is none. A file that cannot be read raises ValueError."""
    path = run_dir / STATE_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); remove it once no suite runs") from None
    if document.get("version") != VERSION:
        raise ValueError(f"{path} has version {document.get('version')!r}, expected {VERSION}")
    return SuiteState(run_dir, document["started_at"], [Running(**c) for c in document["components"]])


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Holds the run directory's lock, or raises SuiteBusy at once if another up/down holds it.

    The lock is an flock, so the kernel drops it when its holder dies: no stale lock to clean.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SuiteBusy(f"another `geoloc up` or `geoloc down` is running on {run_dir}") from None
        yield

"""Detached component processes, and telling whether a recorded pid is still the one we started.

A pid alone is not an identity: once a process exits, the kernel may hand its pid to an
unrelated one. Each start records the process's start time (field 22 of /proc/<pid>/stat,
clock ticks since boot); a pid counts as ours only while it is alive with that same start
time, and nothing is signalled otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

StopOutcome = Literal["stopped", "killed", "not running"]


def start_ticks(pid: int) -> int | None:
    """The start time of a live process `pid` (clock ticks since boot), or None if it is gone.

    Zombies count as gone: they have exited and only wait to be reaped. Without /proc
    (not Linux) any live pid gets 0, which then matches only a record of 0.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _fallback_alive(pid)
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _fallback_alive(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, but someone else's
    return 0


def is_ours(pid: int, ticks: int | None) -> bool:
    """Whether `pid` is alive and is the process that started at `ticks` (see `start_ticks`)."""
    return ticks is not None and start_ticks(pid) == ticks


def spawn(command: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Starts `command` detached: its own session (so a Ctrl-C in this terminal does not reach it,
    and its children share its process group), stdin closed, stdout and stderr to `log_path`
    (overwritten), with `env` over this process's environment."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            list(command),
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(pid: int, ticks: int | None, grace_s: float, child: subprocess.Popen | None = None) -> StopOutcome:
    """SIGTERM the process if it is still ours, wait up to `grace_s`, then SIGKILL its process group.

    Returns "not running" when it had exited (or the pid is someone else's now: nothing is
    sent), "stopped" when it exited on SIGTERM, "killed" when it took SIGKILL. `child`, the
    Popen when this process started it, is polled so that it is reaped. PermissionError
    propagates.
    """
    if not is_ours(pid, ticks):
        return "not running"
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, ticks, grace_s, child):
        # The leader exited; its pid stays reserved while its group has members, so this reaches
        # only helpers it left behind (Triton's Python backend stubs), if any.
        _kill_group(pid)
        return "stopped"
    _kill_group(pid)  # the leader is verified ours above, so its group (a session we created) is ours
    _wait_gone(pid, ticks, 10.0, child)
    return "killed"


def _wait_gone(pid: int, ticks: int | None, timeout_s: float, child: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if child is not None:
            child.poll()
        if not is_ours(pid, ticks):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

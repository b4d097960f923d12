"""Ports for servers started on this machine that cannot bind port 0 and report it (Triton, the suite, tests)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now; tritonserver cannot bind port 0 and report what it got."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]

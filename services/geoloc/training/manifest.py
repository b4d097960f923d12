"""The manifest every shipped model carries beside its checkpoint: what it is and how it was made.

One JSON file next to the checkpoint (same name, .json): its sha256, the backbone it reads, the
data and the exact command that made it, then what the training chose and measured, and how long
it took. tests/test_shipped_models.py holds every shipped manifest to its checkpoint's bytes.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from geoloc.artifacts.files import written_atomically

BACKBONE = "efficientnet-lite2 (model_repository/efficientnet_lite2, 1280-d pooled feature)"
DEMO_NOTE = (
    "demo-grade: 1542 training photos; EfficientNet ImageNet features cap accuracy near the prior (docs/design.md §5)"
)


def command_line(job: str) -> str:
    """`geoloc train JOB ...` as this process was started, options included, for the manifest."""
    given = sys.argv[3:] if sys.argv[1:3] == ["train", job] else []
    return shlex.join(["geoloc", "train", job, *given])


def model_manifest(
    job: str,
    checkpoint: Path,
    sha256: str,
    data: dict,
    started: float,
    command: str | None = None,
    note: str = DEMO_NOTE,
    backbone: str = BACKBONE,
    **fields,
) -> dict:
    """The manifest of `checkpoint`: identity, backbone (default: the shipped one's description), data
    and command (default: this process's `geoloc train JOB ...`) first, then `fields`, the note and
    the seconds since `started` (time.monotonic())."""
    return {
        "file": checkpoint.name,
        "sha256": sha256,
        "backbone": backbone,
        "data": data,
        "command": command or command_line(job),
        **fields,
        "note": note,
        "train_seconds": round(time.monotonic() - started, 1),
    }


def write_manifest(checkpoint: Path, manifest: dict) -> Path:
    """Writes the manifest beside the checkpoint; returns its path."""
    path = checkpoint.with_suffix(".json")
    with written_atomically(path) as stream:
        stream.write((json.dumps(manifest, indent=2) + "\n").encode())
    return path

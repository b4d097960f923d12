"""Torch checkpoints: how every shipped expert model is written and read.

A checkpoint is a plain `torch.save` dict. `save_checkpoint` writes it whole or not at all (through
files.written_atomically) and returns the sha256 of its bytes; `load_checkpoint` reads the file
once and hashes and loads those same bytes, so the version a model reports (the first 12 hex of
the sha256) is of the weights it serves. The gallery head, both samplers and the token decoder are
saved and loaded here; `standardised_network` is the record the samplers and the token decoder
share (config, half-precision weights, the train split's feature moments, the backbone).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from geoloc.artifacts.files import written_atomically

BUFFER_ARCHIVE = "archive"  # the folder torch names inside a checkpoint saved to a stream


@dataclass(frozen=True)
class LoadedCheckpoint:
    record: Any  # what was saved: a dict, for every checkpoint of ours
    sha256: str  # of the bytes loaded

    @property
    def version(self) -> str:
        return self.sha256[:12]


def save_checkpoint(path: Path, record: dict, archive: str | None = None) -> str:
    """Writes `record` with torch.save, atomically; returns the file's sha256.

    A torch checkpoint is a zip whose entries sit in one folder, which torch names after the file
    it saves to (`flow.pt` -> `flow/`), or `archive/` when it saves to a stream. `archive` is that
    name (default: the file's stem, as `torch.save(record, path)` names it), so that a checkpoint
    saved again is byte for byte the one shipped: the record is saved under that name in a scratch
    folder beside `path`, and its bytes written to `path` through written_atomically."""
    path = Path(path)
    archive = archive or path.stem
    if not archive.isascii():  # torch saves a non-ASCII path through a stream
        archive = BUFFER_ARCHIVE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.partial-") as scratch:
        saved = Path(scratch) / f"{archive}.pt"
        torch.save(record, saved)
        data = saved.read_bytes()
    with written_atomically(path) as stream:
        stream.write(data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """The record saved in `path` (on the CPU, weights only) and the sha256 of the bytes it was loaded from."""
    data = Path(path).read_bytes()
    record = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return LoadedCheckpoint(record, hashlib.sha256(data).hexdigest())


def half_precision_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with the learnt weights in half precision (half the file) and buffers as they are.

    Buffers such as the time frequencies (up to 2^15·π) do not fit in half precision, and cost
    nothing to keep exact.
    """
    learnt = {name for name, _ in network.named_parameters()}
    return {
        name: value.detach().cpu().half() if name in learnt else value.detach().cpu()
        for name, value in network.state_dict().items()
    }


def float_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Saved (half-precision) weights as the network runs them, in float32."""
    return {name: value.float() for name, value in state_dict.items()}


def round_as_saved(network: torch.nn.Module) -> None:
    """Rounds the learnt weights to half precision in place, as a checkpoint stores them, so that the
    network answers from here on as it will once saved and loaded."""
    network.load_state_dict(float_weights(half_precision_weights(network)))


def standardised_network(network: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor, backbone: str) -> dict:
    """The checkpoint fields of a network that reads standardised backbone features: its config (a
    dataclass at `network.config`), its weights in half precision, the train split's per-dimension
    feature mean and spread, and the backbone. In this order: the order is part of the file's bytes."""
    return {
        "config": asdict(network.config),
        "state_dict": half_precision_weights(network),
        "feature_mean": mean.cpu(),
        "feature_std": std.cpu(),
        "backbone": backbone,
    }

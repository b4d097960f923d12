"""What a Locate call carries once checked: its options and each of its photos."""

from __future__ import annotations

from dataclasses import dataclass

from geoloc.common.errors import InvalidArgument, defaulted_in_range
from geoloc.experts import EXPERT_NAMES
from geoloc.v1 import embedding_pb2, orchestrator_pb2

MAX_TOP_K = 20
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class LocateChoices:
    """A call's LocateOptions, validated."""

    top_k: int
    asked: tuple[str, ...] | None  # the experts the caller named (short names, in order), None for the default
    include_expert_outputs: bool
    include_distribution: bool
    use_exif_gps: bool


def validated_options(options: orchestrator_pb2.LocateOptions) -> LocateChoices:
    """The options checked; raises InvalidArgument naming the bad field."""
    top_k = defaulted_in_range("options.top_k", options.top_k, DEFAULT_TOP_K, 1, MAX_TOP_K)
    chosen = []
    for i, expert in enumerate(options.experts):
        if expert not in EXPERT_NAMES:
            raise InvalidArgument(f"options.experts[{i}]", f"{expert} is not an Expert")
        chosen.append(EXPERT_NAMES[expert])
    return LocateChoices(
        top_k=top_k,
        asked=tuple(dict.fromkeys(chosen)) or None,
        include_expert_outputs=options.include_expert_outputs,
        include_distribution=options.include_distribution,
        use_exif_gps=options.use_exif_gps,
    )


def validated_image(image: bytes, field: str, max_bytes: int) -> bytes:
    """The photo's bytes, or InvalidArgument naming `field` when there are none or too many."""
    if not image:
        raise InvalidArgument(field, "is empty; send the encoded photo's bytes")
    if len(image) > max_bytes:
        raise InvalidArgument(field, f"has {len(image)} bytes; at most {max_bytes}")
    return image


@dataclass(frozen=True)
class Photo:
    """One photo of a call, embedded: its bytes, the embedding service's answer for it, and the GPS
    position its EXIF claims (exif.exif_gps; None without one)."""

    image: bytes
    embedded: embedding_pb2.EmbedResponse
    exif_gps: tuple[float, float] | None

"""The tokens service's gRPC edge: an embedding (and optionally the gallery's neighbours) in,
decoded S2 cells out.

Decoding is a short burst of small matrix products that already uses every core through torch's
own threads, so decodes run one batch at a time, off the event loop: concurrent beam (or greedy)
decodes with the same options are batched together (geoloc.common.batching), each step one
forward pass for all their beams, which costs little more than one photo's. Neighbours are used when the
shipped decoder attends to them (its checkpoint says how many slots it has: the heaviest that
many are kept) and are accepted and left unused by a decoder trained without them, so that the
orchestrator can always pass what it has.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sys
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch

from geoloc.artifacts.bundles import Bundle
from geoloc.common.batching import Batcher
from geoloc.common.embeddings import validated_embedding
from geoloc.common.errors import InvalidArgument, NotReady, defaulted_in_range, named_enum_value
from geoloc.common.metrics import BatchMetrics, ServerMetrics
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.tracing import step
from geoloc.geo.s2cells import cell_id_to_s2_token
from geoloc.tokens.cells import DecodedCell, Strategy, decode_photos
from geoloc.tokens.config import TokensSettings
from geoloc.tokens.decoder import Neighbours
from geoloc.tokens.model import TokenModel, load_token_model
from geoloc.tokens.neighbours import neighbour_sets
from geoloc.tokens.search import MAX_LEVEL
from geoloc.v1 import common_pb2, tokens_pb2, tokens_pb2_grpc

STRATEGY_NAMES: dict[int, Strategy] = {
    tokens_pb2.DECODE_STRATEGY_GREEDY: "greedy",
    tokens_pb2.DECODE_STRATEGY_BEAM: "beam",
    tokens_pb2.DECODE_STRATEGY_SAMPLE: "sample",
}
STRATEGY_ENUMS = {name: value for value, name in STRATEGY_NAMES.items()}

# Below this, sampling is greedy decoding in all but name; near float32's smallest values the
# scaled logits overflow into NaN probabilities and the draw fails.
MIN_TEMPERATURE = 1e-3


def validated_neighbours(points, slots: int, max_count: int) -> Neighbours | None:
    """The request's neighbours as the decoder's input (a batch of one), or None when there are none
    to use; raises InvalidArgument naming the first bad point."""
    if len(points) > max_count:
        raise InvalidArgument("neighbors", f"has {len(points)} points; at most {max_count}")
    for i, p in enumerate(points):
        if not (math.isfinite(p.lat_deg) and -90 <= p.lat_deg <= 90):
            raise InvalidArgument(f"neighbors[{i}].lat_deg", f"must be in [-90, 90], got {p.lat_deg}")
        if not (math.isfinite(p.lon_deg) and -180 <= p.lon_deg <= 180):
            raise InvalidArgument(f"neighbors[{i}].lon_deg", f"must be in [-180, 180], got {p.lon_deg}")
        if not (math.isfinite(p.weight) and p.weight >= 0):
            raise InvalidArgument(f"neighbors[{i}].weight", f"must be finite and >= 0, got {p.weight}")
    if not slots or not points:
        return None
    lat, lon, weight = (np.array([[getattr(p, f) for p in points]]) for f in ("lat_deg", "lon_deg", "weight"))
    return neighbour_sets(lat, lon, weight, slots)


@dataclass(frozen=True, eq=False)
class PhotoToDecode:
    feature: np.ndarray  # [d]
    neighbours: Neighbours | None
    generator: torch.Generator
    options: dict

    def batch_key(self) -> Hashable:
        """Beam and greedy decodes without neighbours, with the same options, can share a batch;
        anything else (a sample's own draws, its own neighbours) runs as a batch of one."""
        o = self.options
        if self.neighbours is None and o["strategy"] in ("beam", "greedy"):
            return (o["strategy"], o["beam_width"], o["level"])
        return self


class TokensServicer(tokens_pb2_grpc.TokensServiceServicer):
    def __init__(self, settings: TokensSettings):
        self.settings = settings
        self._model: TokenModel | None = None
        self._batcher: Batcher | None = None
        self._batch_metrics: BatchMetrics | None = None

    async def warm_up(self) -> None:
        device = "cuda" if self.settings.use_gpu and torch.cuda.is_available() else "cpu"
        bundle = None if self.settings.bundle is None else Bundle.read(self.settings.bundle)
        checkpoint = self.settings.checkpoint if bundle is None else bundle.file("tokens")
        self._model = await asyncio.to_thread(load_token_model, checkpoint, device)
        if bundle is not None:
            bundle.check_served("token decoder", self._model.backbone, self._model.in_dim)
        # Concurrent beam and greedy decodes with the same options share each step's forward pass.
        self._batcher = Batcher(
            self._decode_batch,
            max_batch=self.settings.max_batch,
            key=PhotoToDecode.batch_key,
            metrics=self._batch_metrics,
        )
        probe = tokens_pb2.DecodeRequest(embedding=common_pb2.Embedding(values=[0.5] * self._model.in_dim))
        answer = await self.Decode(probe, None)  # one real decode before SERVING
        if not answer.cells or not math.isclose(sum(c.probability for c in answer.cells), 1.0, rel_tol=1e-6):
            raise RuntimeError("the token decoder's warm-up call gave a malformed answer")

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        self._batch_metrics = metrics.batcher("tokens")

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    def _decode_batch(self, photos: list[PhotoToDecode]) -> list[list[DecodedCell]]:
        first = photos[0]  # a batch shares its options; only a lone photo has neighbours or a generator's draws
        features = np.stack([photo.feature for photo in photos])
        return decode_photos(
            self._model, features, neighbours=first.neighbours, generator=first.generator, **first.options
        )

    def _resolve(self, request: tokens_pb2.DecodeRequest) -> dict:
        s = self.settings
        strategy = named_enum_value("strategy", request.strategy, STRATEGY_NAMES, s.default_strategy, "DecodeStrategy")
        beam_width = defaulted_in_range("beam_width", request.beam_width, s.default_beam_width, 1, s.max_beam_width)
        n_samples = defaulted_in_range("n_samples", request.n_samples, s.default_samples, 1, s.max_samples)
        temperature = request.temperature if request.HasField("temperature") else s.default_temperature
        if not (math.isfinite(temperature) and MIN_TEMPERATURE <= temperature <= s.max_temperature):
            raise InvalidArgument(
                "temperature", f"must be in [{MIN_TEMPERATURE:g}, {s.max_temperature:g}], got {temperature}"
            )
        level = defaulted_in_range("max_level", request.max_level, MAX_LEVEL, 1, MAX_LEVEL)
        return {
            "strategy": strategy,
            "beam_width": beam_width,
            "n_samples": n_samples,
            "temperature": temperature,
            "level": level,
        }

    async def Decode(self, request: tokens_pb2.DecodeRequest, context) -> tokens_pb2.DecodeResponse:
        model = self._model
        if model is None:
            raise NotReady("the token decoder is still loading")
        options = self._resolve(request)
        feature = validated_embedding(request.embedding, model.in_dim, model.backbone, "token decoder")
        neighbours = validated_neighbours(request.neighbors, model.neighbour_slots, self.settings.max_neighbors)
        generator = torch.Generator().manual_seed(request.seed if request.HasField("seed") else secrets.randbits(63))
        with step("tokens.decode"):
            cells = await self._batcher.submit(PhotoToDecode(feature, neighbours, generator, options))
        return tokens_pb2.DecodeResponse(
            cells=[cell_message(c) for c in cells],
            points=[
                common_pb2.WeightedPoint(
                    lat_deg=c.lat_deg, lon_deg=c.lon_deg, weight=c.probability, radius_km=c.radius_km
                )
                for c in cells
            ],
            strategy=STRATEGY_ENUMS[options["strategy"]],
            model=common_pb2.ModelInfo(name=f"geotoken/{model.backbone}", version=model.version),
        )


def cell_message(cell: DecodedCell) -> tokens_pb2.Cell:
    return tokens_pb2.Cell(
        tokens=cell.tokens,
        cell_id=cell.cell_id,
        s2_token=cell_id_to_s2_token(cell.cell_id),
        level=cell.level,
        lat_deg=cell.lat_deg,
        lon_deg=cell.lon_deg,
        probability=cell.probability,
        log_probability=cell.log_probability,
    )


def tokens_spec(servicer: TokensServicer) -> ServiceSpec:
    return servicer_spec(tokens_pb2, "TokensService", tokens_pb2_grpc.add_TokensServiceServicer_to_server, servicer)


if __name__ == "__main__":
    sys.exit(run_service(TokensSettings, lambda settings: [tokens_spec(TokensServicer(settings))]))

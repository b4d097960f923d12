"""Calling the embedding service and the experts, each under its share of the caller's deadline.

Every call's timeout is the smaller of the expert's own default and what is left of the caller's
deadline minus a margin kept for fusion and the reply. Channels retry UNAVAILABLE only, through
the gRPC service config (geoloc.common.channels). An expert that fails, times out or is not
deployed comes back as an `ExpertResult` with its status and no points: the call goes on without it.

The token decoder shipped today was trained without neighbours (they did not help on val, see
docs/tokens.md), so the tokens expert is asked in parallel with the gallery, not after it. The
text expert reads pixels, not the embedding: it is sent the photo, concurrently with the
embedding call (`ask_text`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from geoloc.common.channels import create_channel
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.fusion import ExpertPoints
from geoloc.v1 import (
    common_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    gallery_pb2,
    gallery_pb2_grpc,
    orchestrator_pb2,
    sampler_pb2,
    sampler_pb2_grpc,
    text_pb2,
    text_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)

STATUS_OF_CODE = {
    grpc.StatusCode.DEADLINE_EXCEEDED: orchestrator_pb2.EXPERT_STATUS_DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE: orchestrator_pb2.EXPERT_STATUS_UNAVAILABLE,
}


@dataclass
class ExpertResult:
    expert: str
    status: int  # orchestrator_pb2.ExpertStatus
    message: str = ""
    points: ExpertPoints | None = None
    wire_points: list = field(default_factory=list)  # the WeightedPoint messages, for include_expert_outputs
    cells: list = field(default_factory=list)  # tokens_pb2.Cell, for include_expert_outputs
    text: list = field(default_factory=list)  # text_pb2.TextLine, for include_expert_outputs
    model: common_pb2.ModelInfo | None = None
    latency_ms: float = 0.0


def expert_request(expert: str, embedding: common_pb2.Embedding, settings: OrchestratorSettings):
    """What the orchestrator asks an embedding expert ("gallery", "flow", "sh", "tokens") at its settings."""
    if expert == "gallery":
        return gallery_pb2.SearchRequest(embedding=embedding, k=settings.gallery_k)
    if expert in ("flow", "sh"):
        method = sampler_pb2.SAMPLING_METHOD_FLOW if expert == "flow" else sampler_pb2.SAMPLING_METHOD_SH_DIFFUSION
        samples, steps = getattr(settings, f"{expert}_samples"), getattr(settings, f"{expert}_steps")
        return sampler_pb2.SampleRequest(embedding=embedding, method=method, n_samples=samples, steps=steps, seed=0)
    return tokens_pb2.DecodeRequest(
        embedding=embedding, strategy=tokens_pb2.DECODE_STRATEGY_BEAM, beam_width=settings.tokens_beam_width
    )


class ExpertClients:
    """One channel per configured service; `None` addresses are experts not deployed."""

    def __init__(self, settings: OrchestratorSettings):
        self.settings = settings
        size = settings.max_receive_message_bytes
        tls = settings.client_tls()  # None: plaintext
        self._channels = []

        def channel(address: str | None):
            if address is None or address.lower() == "none" or not address:
                return None
            made = create_channel(address, max_message_bytes=size, tls=tls)
            self._channels.append(made)
            return made

        embedding = channel(settings.embedding_address)
        if embedding is None:
            raise ValueError("the orchestrator needs an embedding service address")
        self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(embedding)
        s = settings
        gallery, sampler, tokens, text = (
            channel(a) for a in (s.gallery_address, s.sampler_address, s.tokens_address, s.text_address)
        )
        self.gallery = gallery_pb2_grpc.GalleryServiceStub(gallery) if gallery else None
        self.sampler = sampler_pb2_grpc.SamplerServiceStub(sampler) if sampler else None
        self.tokens = tokens_pb2_grpc.TokensServiceStub(tokens) if tokens else None
        self.text = text_pb2_grpc.TextServiceStub(text) if text else None

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    def deployed(self) -> list[str]:
        stubs = {
            "gallery": self.gallery,
            "flow": self.sampler,
            "sh": self.sampler,
            "tokens": self.tokens,
            "text": self.text,
        }
        return [name for name, stub in stubs.items() if stub is not None]

    def timeout_s(self, expert: str) -> float:
        s = self.settings
        return {
            "gallery": s.gallery_timeout_s,
            "flow": s.sampler_timeout_s,
            "sh": s.sampler_timeout_s,
            "tokens": s.tokens_timeout_s,
            "text": s.text_timeout_s,
        }[expert]

    async def ask(self, expert: str, embedding: common_pb2.Embedding, budget_s: float) -> ExpertResult:
        """One embedding expert's answer within min(its timeout, budget_s), or its failure as a status."""
        return await self._answer_or_status(expert, budget_s, lambda timeout: self._call(expert, embedding, timeout))

    async def ask_text(self, image: bytes, budget_s: float, include_text: bool) -> ExpertResult:
        """The text expert's answer for the photo within min(its timeout, budget_s), or its failure as a
        status; with the lines it read when `include_text` (they travel only when the caller asked)."""

        async def call(timeout: float) -> ExpertResult:
            request = text_pb2.ReadRequest(image=image, include_text=include_text)
            answer = await self.text.Read(request, timeout=timeout)
            points = list(answer.points)
            return ExpertResult(
                "text",
                orchestrator_pb2.EXPERT_STATUS_OK,
                points=ExpertPoints.of("text", points),
                wire_points=points,
                text=list(answer.lines),
                model=answer.model,
            )

        return await self._answer_or_status("text", budget_s, call)

    async def _answer_or_status(self, expert: str, budget_s: float, call) -> ExpertResult:
        timeout = min(self.timeout_s(expert), budget_s)
        started = time.perf_counter()
        if timeout <= 0:
            return ExpertResult(
                expert, orchestrator_pb2.EXPERT_STATUS_DEADLINE_EXCEEDED, "no time left in the caller's deadline"
            )
        try:
            result = await call(timeout)
        except grpc.aio.AioRpcError as error:
            status = STATUS_OF_CODE.get(error.code(), orchestrator_pb2.EXPERT_STATUS_FAILED)
            result = ExpertResult(expert, status, f"{error.code().name}: {error.details()}")
        result.latency_ms = 1000 * (time.perf_counter() - started)
        return result

    async def _call(self, expert: str, embedding: common_pb2.Embedding, timeout: float) -> ExpertResult:
        ok = orchestrator_pb2.EXPERT_STATUS_OK
        request = expert_request(expert, embedding, self.settings)
        if expert == "gallery":
            answer = await self.gallery.Search(request, timeout=timeout)
            points = list(answer.points)
            return ExpertResult(
                expert, ok, points=ExpertPoints.of(expert, points), wire_points=points, model=answer.model
            )
        if expert in ("flow", "sh"):
            answer = await self.sampler.Sample(request, timeout=timeout)
            points = list(answer.samples)
            return ExpertResult(
                expert, ok, points=ExpertPoints.of(expert, points), wire_points=list(answer.modes), model=answer.model
            )
        answer = await self.tokens.Decode(request, timeout=timeout)
        points = list(answer.points)
        return ExpertResult(
            expert,
            ok,
            points=ExpertPoints.of(expert, points),
            wire_points=points,
            cells=list(answer.cells),
            model=answer.model,
        )

    async def embed(self, image: bytes, timeout: float) -> embedding_pb2.EmbedResponse:
        return await self.embedding.Embed(embedding_pb2.EmbedRequest(image=image), timeout=timeout)

    async def embed_text(self, text: str, timeout: float) -> embedding_pb2.EmbedTextResponse:
        return await self.embedding.EmbedText(embedding_pb2.EmbedTextRequest(text=text), timeout=timeout)

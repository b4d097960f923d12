"""Calling the embedding service and the experts, each under its share of the caller's deadline.

Every call's timeout is the smaller of the expert's own default and what is left of the caller's
deadline minus a margin kept for fusion and the reply. Channels retry UNAVAILABLE only, through
the gRPC service config (geoloc.common.channels). An expert that fails, times out or is not
deployed comes back as an `ExpertResult` with its status and no points: the call goes on without it.

The token decoder shipped today was trained without neighbours (they did not help on val, see
docs/tokens.md), so the tokens expert is asked in parallel with the gallery, not after it. The
text expert reads pixels, not the embedding: it is sent the photo, concurrently with the
embedding call (`ask` with the photo's bytes, for an expert whose registry entry reads the photo).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from geoloc import experts as registry
from geoloc.common.channels import create_channel
from geoloc.experts import EXPERT_TABLE, SERVICE_TABLE, SERVICES_BY_NAME
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.fusion import ExpertPoints
from geoloc.v1 import common_pb2, embedding_pb2, orchestrator_pb2

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


def asked_of(settings: OrchestratorSettings, include_text: bool = False) -> dict:
    """What the orchestrator asks its experts at these settings: every setting an expert's request
    reads (its registry entry's `asked`), and whether the text expert sends its lines back."""
    asked = {name: getattr(settings, name) for e in EXPERT_TABLE for name in e.asked if name != "include_text"}
    return {**asked, "include_text": include_text}


def expert_request(expert: str, carried, settings: OrchestratorSettings):
    """What the orchestrator asks `expert` for one photo (its embedding, or its bytes for an expert
    that reads the photo) at its settings."""
    return registry.expert(expert).request(carried, asked_of(settings))


class ExpertClients:
    """One channel per configured service; `None` addresses are services not deployed."""

    def __init__(self, settings: OrchestratorSettings):
        self.settings = settings
        size = settings.max_receive_message_bytes
        tls = settings.client_tls()  # None: plaintext
        self._channels = []
        self._stubs = {}  # service name -> stub, for the services deployed
        for service in SERVICE_TABLE:
            if service.address_setting is None:
                continue
            address = getattr(settings, service.address_setting)
            if address is None or not address or address.lower() == "none":
                continue
            channel = create_channel(address, max_message_bytes=size, tls=tls)
            self._channels.append(channel)
            self._stubs[service.name] = service.stub_class()(channel)
        if "embedding" not in self._stubs:
            raise ValueError("the orchestrator needs an embedding service address")
        self.embedding = self._stubs["embedding"]

    def stub(self, service: str):
        """The stub of a deployed service, or None."""
        return self._stubs.get(service)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    def deployed(self) -> list[str]:
        return [e.name for e in EXPERT_TABLE if e.service in self._stubs]

    def timeout_s(self, expert: str) -> float:
        return getattr(self.settings, SERVICES_BY_NAME[registry.expert(expert).service].timeout_setting)

    async def ask(self, expert: str, carried, budget_s: float, include_text: bool = False) -> ExpertResult:
        """One expert's answer for a photo (its embedding, or its bytes for an expert that reads the photo)
        within min(its timeout, budget_s), or its failure as a status; the text expert's lines travel
        only when `include_text` (the caller asked for expert outputs)."""
        entry = registry.expert(expert)
        request = entry.request(carried, asked_of(self.settings, include_text))
        call = getattr(self._stubs[entry.service], entry.rpc)

        async def answered(timeout: float) -> ExpertResult:
            answer = await call(request, timeout=timeout)
            return ExpertResult(
                expert,
                orchestrator_pb2.EXPERT_STATUS_OK,
                points=ExpertPoints.of(expert, entry.fused_points(answer)),
                wire_points=entry.shown_points(answer),
                model=answer.model,
                **entry.extras(answer),
            )

        return await self._answer_or_status(expert, budget_s, answered)

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

    async def embed(self, image: bytes, timeout: float) -> embedding_pb2.EmbedResponse:
        return await self.embedding.Embed(embedding_pb2.EmbedRequest(image=image), timeout=timeout)

    async def embed_text(self, text: str, timeout: float) -> embedding_pb2.EmbedTextResponse:
        return await self.embedding.EmbedText(embedding_pb2.EmbedTextRequest(text=text), timeout=timeout)

"""The orchestrator's gRPC edge: a photo in, one fused, calibrated answer out.

Locate validates the request, reads the photo's EXIF GPS as separate evidence, embeds the photo
once (the text expert, which reads pixels, is sent the photo at the same time), asks the
deployed experts the caller named (by default those the fitted fusion weighs) concurrently under
the caller's deadline, fuses the answers that came back with the fitted parameters (the prior
always among them), names the hypotheses' places offline, and reports every expert's status. An expert that fails only
leaves the answer with fewer components: with none, the answer is the prior.

The validated options and photos are inputs.py's, the messages built responses.py's, the EXIF
override exif.py's, and the mapping of another service's errors calls.py's.
"""

from __future__ import annotations

import asyncio
import sys
import time

from prometheus_client import CollectorRegistry

from geoloc import experts as registry
from geoloc.artifacts.bundles import Bundle
from geoloc.common.errors import FailedPrecondition, InvalidArgument, NotReady, defaulted_in_range
from geoloc.common.logs import current_request_id
from geoloc.common.metrics import ServerMetrics
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.texts import validated_text
from geoloc.common.tracing import annotate, step
from geoloc.experts import TEXT_QUERY_SERVICE
from geoloc.orchestrator.calls import called
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.exif import answer_with_exif, exif_gps, exif_message
from geoloc.orchestrator.experts import ExpertClients
from geoloc.orchestrator.fusion import FusedAnswer, fuse
from geoloc.orchestrator.inputs import DEFAULT_TOP_K, LocateChoices, Photo, validated_image, validated_options
from geoloc.orchestrator.metrics import LocateMetrics, answer_kind
from geoloc.orchestrator.parameters import FittedFusion, load_fusion
from geoloc.orchestrator.responses import locate_response, text_matches, with_skipped
from geoloc.places import PlaceNamer, place_message
from geoloc.v1 import gallery_pb2, orchestrator_pb2, orchestrator_pb2_grpc

MAX_TEXT_MATCHES = 100


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, settings: OrchestratorSettings):
        self.settings = settings
        self._clients: ExpertClients | None = None
        self._fusion: FittedFusion | None = None
        self._places: PlaceNamer | None = None
        # Counted in a registry of its own until a server binds its registry (bind_metrics).
        self._metrics = LocateMetrics(CollectorRegistry())

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        self._metrics = LocateMetrics(metrics.registry)

    async def warm_up(self) -> None:
        s = self.settings
        parameters = s.fusion_parameters if s.bundle is None else Bundle.read(s.bundle).file("fusion")
        self._fusion = await asyncio.to_thread(load_fusion, parameters)
        self._places = await asyncio.to_thread(PlaceNamer)
        self._clients = ExpertClients(self.settings)
        # One real fusion (of the prior alone) and naming before SERVING.
        answer = await asyncio.to_thread(fuse, [], self._fusion.parameters, self._fusion.prior, 1)
        self._places.name(answer.best_guess.lat_deg, answer.best_guess.lon_deg)

    async def close(self) -> None:
        if self._clients is not None:
            await self._clients.close()

    def _to_ask(self, asked: tuple[str, ...] | None) -> list[str]:
        """The deployed experts to ask: those the caller named, or by default those the fitted fusion
        weighs. An expert fitted to weight 0 cannot move the answer, so by default its time (the SH
        sampler's is the longest of all) is not spent; a caller who wants its points names it."""
        deployed = self._clients.deployed()
        if asked is not None:
            return [e for e in asked if e in deployed]
        if self.settings.ask_unweighted_experts:
            return deployed
        return [e for e in deployed if self._fusion.parameters.weights.get(e, 0.0) > 0]

    def _budget_s(self, context) -> float:
        remaining = context.time_remaining() if context is not None else None
        budget = (
            self.settings.default_deadline_s if remaining is None else min(remaining, self.settings.default_deadline_s)
        )
        return budget - self.settings.deadline_margin_s

    def _validated_image(self, image: bytes, field: str) -> bytes:
        return validated_image(image, field, self.settings.max_image_bytes)

    async def Locate(self, request: orchestrator_pb2.LocateRequest, context) -> orchestrator_pb2.LocateResponse:
        if self._clients is None:
            raise NotReady("the orchestrator is still loading")
        image = self._validated_image(request.image, "image")
        options = validated_options(request.options)
        deadline = time.perf_counter() + self._budget_s(context)
        started = time.perf_counter()
        readers = self._start_photo_readers(image, options, deadline)
        try:
            photo = await self._embedded_photo(image, deadline, "image")
        except BaseException:
            _cancel(readers)
            raise
        return await self._locate(photo, readers, started, options, deadline)

    async def LocateBatch(
        self, request: orchestrator_pb2.LocateBatchRequest, context
    ) -> orchestrator_pb2.LocateBatchResponse:
        if self._clients is None:
            raise NotReady("the orchestrator is still loading")
        count = len(request.images)
        if not 1 <= count <= self.settings.max_batch_images:
            raise InvalidArgument("images", f"must hold 1 to {self.settings.max_batch_images} photos, got {count}")
        images = [self._validated_image(image, f"images[{i}]") for i, image in enumerate(request.images)]
        options = validated_options(request.options)
        deadline = time.perf_counter() + self._budget_s(context)
        started = time.perf_counter()
        readers = [self._start_photo_readers(image, options, deadline) for image in images]
        # Every photo is embedded, and so checked, before any embedding expert is asked: a bad photo
        # fails the whole call naming the first bad index, whichever embedding finished first, and
        # no expert works on an answer that would be thrown away (the text expert's calls, started
        # with the embeddings, are cancelled).
        photos = await asyncio.gather(
            *(self._embedded_photo(image, deadline, f"images[{i}]") for i, image in enumerate(images)),
            return_exceptions=True,
        )
        for outcome in photos:
            if isinstance(outcome, BaseException):
                _cancel([task for tasks in readers for task in tasks])
                raise outcome
        answers = await asyncio.gather(
            *(self._locate(photo, own, started, options, deadline) for photo, own in zip(photos, readers, strict=True))
        )
        return orchestrator_pb2.LocateBatchResponse(responses=answers)

    async def LocateText(
        self, request: orchestrator_pb2.LocateTextRequest, context
    ) -> orchestrator_pb2.LocateTextResponse:
        if self._clients is None:
            raise NotReady("the orchestrator is still loading")
        query = validated_text(request.query, self.settings.max_query_chars, "query")
        top_k = defaulted_in_range("top_k", request.top_k, DEFAULT_TOP_K, 1, MAX_TEXT_MATCHES)
        searched = registry.SERVICES_BY_NAME[TEXT_QUERY_SERVICE]
        gallery = self._clients.stub(searched.name)
        if gallery is None:
            raise FailedPrecondition(
                f"LocateText searches the {searched.name} expert, which this deployment does not run"
            )
        deadline = time.perf_counter() + self._budget_s(context)
        s = self.settings
        embedded = await called("embedding", "query", deadline, s.embed_timeout_s, self._clients.embed_text, query)
        search = gallery_pb2.SearchRequest(embedding=embedded.embedding, k=top_k)
        timeout_s = getattr(s, searched.timeout_setting)
        found = await called(searched.name, None, deadline, timeout_s, gallery.Search, search)
        with step("orchestrator.name_places", places=len(found.points)):
            places = await asyncio.to_thread(lambda: [self._places.name(p.lat_deg, p.lon_deg) for p in found.points])
        return orchestrator_pb2.LocateTextResponse(
            matches=text_matches(found.points, places),
            truncated=embedded.truncated,
            backbone=embedded.embedding.backbone,
            gallery=found.model,
            request_id=current_request_id() or "",
        )

    def _start_photo_readers(self, image: bytes, options: LocateChoices, deadline: float) -> list[asyncio.Task]:
        """The calls of the experts that read the photo rather than its embedding (the text expert),
        started now, beside the embedding call; none for those not deployed or not asked for."""
        budget = deadline - time.perf_counter()
        return [
            asyncio.create_task(self._clients.ask(e, image, budget, options.include_expert_outputs))
            for e in self._to_ask(options.asked)
            if registry.expert(e).reads == "photo"
        ]

    async def _embedded_photo(self, image: bytes, deadline: float, field: str) -> Photo:
        """The photo embedded, with its EXIF GPS position; a bad photo raises InvalidArgument."""
        with step("orchestrator.read_exif"):
            exif = await asyncio.to_thread(exif_gps, image)
        return Photo(image, await self._embed(image, deadline, field), exif)

    async def _locate(
        self, photo: Photo, readers: list[asyncio.Task], started: float, options: LocateChoices, deadline: float
    ) -> orchestrator_pb2.LocateResponse:
        """The answer for one photo already embedded, with the calls of the experts that read its pixels
        started for it; `started` is when the call began."""
        embed_ms = 1000 * (time.perf_counter() - started)

        deployed = self._clients.deployed()
        calls = [e for e in self._to_ask(options.asked) if registry.expert(e).reads == "embedding"]
        budget = deadline - time.perf_counter()
        results = await asyncio.gather(*(self._clients.ask(e, photo.embedded.embedding, budget) for e in calls))
        results.extend(await asyncio.gather(*readers))
        by_expert = with_skipped(results, deployed, options.asked)
        experts_ms = 1000 * (time.perf_counter() - started) - embed_ms

        answered = [
            r.points
            for r in by_expert.values()
            if r.status == orchestrator_pb2.EXPERT_STATUS_OK and r.points is not None
        ]
        statuses = {e: r.status for e, r in by_expert.items()}
        annotate(**{"geoloc.answer": answer_kind(statuses)})
        self._metrics.answered(statuses)
        with step("orchestrator.fuse", experts=len(answered)), self._metrics.fusion_seconds.time():
            fused: FusedAnswer = await asyncio.to_thread(
                fuse, answered, self._fusion.parameters, self._fusion.prior, options.top_k
            )
        with step("orchestrator.name_places", places=len(fused.hypotheses)):
            places = await asyncio.to_thread(
                lambda: [self._places.name(h.lat_deg, h.lon_deg) for h in fused.hypotheses]
            )
        backbone = photo.embedded.embedding.backbone
        response = locate_response(fused, places, by_expert, options, backbone, self._fusion.version)
        if photo.exif_gps is not None:
            response.exif_gps.CopyFrom(exif_message(*photo.exif_gps))
            if options.use_exif_gps:
                answer_with_exif(response, photo.exif_gps, place_message(self._places.name(*photo.exif_gps)))
        fusion_ms = 1000 * (time.perf_counter() - started) - embed_ms - experts_ms
        response.timings.CopyFrom(
            orchestrator_pb2.Timings(
                embed_ms=embed_ms,
                experts_ms=experts_ms,
                fusion_ms=fusion_ms,
                total_ms=1000 * (time.perf_counter() - started),
            )
        )
        response.request_id = current_request_id() or ""
        return response

    async def _embed(self, image: bytes, deadline: float, field: str):
        return await called("embedding", field, deadline, self.settings.embed_timeout_s, self._clients.embed, image)


def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()


def orchestrator_spec(servicer: OrchestratorServicer) -> ServiceSpec:
    return servicer_spec(
        orchestrator_pb2,
        "OrchestratorService",
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        servicer,
    )


if __name__ == "__main__":
    sys.exit(run_service(OrchestratorSettings, lambda settings: [orchestrator_spec(OrchestratorServicer(settings))]))

"""The orchestrator's gRPC edge: a photo in, one fused, calibrated answer out.

Locate validates the request, reads the photo's EXIF GPS as separate evidence, embeds the photo
once (the text expert, which reads pixels, is sent the photo at the same time), asks the
deployed experts the caller named (by default those the fitted fusion weighs) concurrently under
the caller's deadline, fuses the answers that came back with the fitted parameters (the prior
always among them), names the hypotheses' places offline, and reports every expert's status. An expert that fails only
leaves the answer with fewer components: with none, the answer is the prior.
"""

from __future__ import annotations

import asyncio
import sys
import time

import grpc
from prometheus_client import CollectorRegistry

from geoloc import experts as registry
from geoloc.artifacts.bundles import Bundle
from geoloc.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotReady,
    defaulted_in_range,
    retry_delay_s,
)
from geoloc.common.logs import current_request_id
from geoloc.common.metrics import ServerMetrics
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.texts import validated_text
from geoloc.common.tracing import annotate, step
from geoloc.experts import EXPERT_ENUMS, EXPERT_NAMES
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.exif import exif_gps, exif_message
from geoloc.orchestrator.experts import ExpertClients, ExpertResult
from geoloc.orchestrator.fusion import FusedAnswer, Hypothesis, fuse, mixture_points
from geoloc.orchestrator.metrics import LocateMetrics, answer_kind
from geoloc.orchestrator.parameters import FittedFusion, load_fusion
from geoloc.places import PlaceNamer, place_message
from geoloc.v1 import common_pb2, gallery_pb2, orchestrator_pb2, orchestrator_pb2_grpc

MAX_TOP_K = 20
DEFAULT_TOP_K = 5
MAX_TEXT_MATCHES = 100
TEXT_QUERY_SERVICE = "gallery"  # LocateText's answer is this service's search for the text's embedding
EXIF_RADIUS_KM = (0.01, 0.03)  # r50, r90 of a consumer GPS fix, about 10 m and 30 m
UNWEIGHTED_REASON = (
    "the fitted fusion gives it weight 0, so it cannot change the answer; name it in options.experts to ask it"
)


def validated_options(options: orchestrator_pb2.LocateOptions) -> tuple[int, list[str] | None]:
    """(top_k, the experts asked for or None for all); raises InvalidArgument naming the bad field."""
    top_k = defaulted_in_range("options.top_k", options.top_k, DEFAULT_TOP_K, 1, MAX_TOP_K)
    chosen = []
    for i, expert in enumerate(options.experts):
        if expert not in EXPERT_NAMES:
            raise InvalidArgument(f"options.experts[{i}]", f"{expert} is not an Expert")
        chosen.append(EXPERT_NAMES[expert])
    return top_k, (list(dict.fromkeys(chosen)) or None)


def hypothesis_message(h: Hypothesis, place) -> orchestrator_pb2.Hypothesis:
    return orchestrator_pb2.Hypothesis(
        lat_deg=h.lat_deg,
        lon_deg=h.lon_deg,
        probability=h.probability,
        radius_50_km=h.radius_50_km,
        radius_90_km=h.radius_90_km,
        place=place,
    )


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

    def _to_ask(self, asked: list[str] | None) -> list[str]:
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
        if not image:
            raise InvalidArgument(field, "is empty; send the encoded photo's bytes")
        if len(image) > self.settings.max_image_bytes:
            raise InvalidArgument(field, f"has {len(image)} bytes; at most {self.settings.max_image_bytes}")
        return image

    async def Locate(self, request: orchestrator_pb2.LocateRequest, context) -> orchestrator_pb2.LocateResponse:
        if self._clients is None:
            raise NotReady("the orchestrator is still loading")
        image = self._validated_image(request.image, "image")
        options = validated_options(request.options)
        deadline = time.perf_counter() + self._budget_s(context)
        started = time.perf_counter()
        readers = self._start_photo_readers(image, options, deadline, request.options)
        try:
            photo = await self._embedded_photo(image, deadline, "image")
        except BaseException:
            _cancel(readers)
            raise
        return await self._locate(photo, readers, started, request.options, options, deadline)

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
        readers = [self._start_photo_readers(image, options, deadline, request.options) for image in images]
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
            *(
                self._locate(photo, text, started, request.options, options, deadline)
                for photo, text in zip(photos, readers, strict=True)
            )
        )
        return orchestrator_pb2.LocateBatchResponse(responses=answers)

    async def LocateText(
        self, request: orchestrator_pb2.LocateTextRequest, context
    ) -> orchestrator_pb2.LocateTextResponse:
        if self._clients is None:
            raise NotReady("the orchestrator is still loading")
        query = validated_text(request.query, self.settings.max_query_chars, "query")
        top_k = defaulted_in_range("top_k", request.top_k, DEFAULT_TOP_K, 1, MAX_TEXT_MATCHES)
        gallery = self._clients.stub(TEXT_QUERY_SERVICE)
        if gallery is None:
            raise FailedPrecondition("LocateText searches the gallery expert, which this deployment does not run")
        deadline = time.perf_counter() + self._budget_s(context)
        s = self.settings
        embedded = await _called("embedding", "query", deadline, s.embed_timeout_s, self._clients.embed_text, query)
        search = gallery_pb2.SearchRequest(embedding=embedded.embedding, k=top_k)
        found = await _called(TEXT_QUERY_SERVICE, None, deadline, s.gallery_timeout_s, gallery.Search, search)
        with step("orchestrator.name_places", places=len(found.points)):
            places = await asyncio.to_thread(lambda: [self._places.name(p.lat_deg, p.lon_deg) for p in found.points])
        return orchestrator_pb2.LocateTextResponse(
            matches=[
                orchestrator_pb2.TextMatch(
                    lat_deg=p.lat_deg, lon_deg=p.lon_deg, probability=p.weight, place=place_message(place)
                )
                for p, place in zip(found.points, places, strict=True)
            ],
            truncated=embedded.truncated,
            backbone=embedded.embedding.backbone,
            gallery=found.model,
            request_id=current_request_id() or "",
        )

    def _start_photo_readers(self, image: bytes, options, deadline: float, wire_options) -> list[asyncio.Task]:
        """The calls of the experts that read the photo rather than its embedding (the text expert),
        started now, beside the embedding call; none for those not deployed or not asked for."""
        _, asked = options
        budget = deadline - time.perf_counter()
        return [
            asyncio.create_task(self._clients.ask(e, image, budget, wire_options.include_expert_outputs))
            for e in self._to_ask(asked)
            if registry.expert(e).reads == "photo"
        ]

    async def _embedded_photo(self, image: bytes, deadline: float, field: str) -> tuple:
        """(the photo's EmbedResponse, its EXIF GPS position or None); a bad photo raises InvalidArgument."""
        with step("orchestrator.read_exif"):
            exif = await asyncio.to_thread(exif_gps, image)
        return await self._embed(image, deadline, field), exif

    async def _locate(
        self, photo: tuple, readers: list[asyncio.Task], started: float, wire_options, options, deadline: float
    ) -> orchestrator_pb2.LocateResponse:
        """The answer for one photo already embedded, with the calls of the experts that read its pixels
        started for it; `started` is when the call began."""
        embedded, exif = photo
        top_k, asked = options
        embed_ms = 1000 * (time.perf_counter() - started)

        deployed = self._clients.deployed()
        calls = [e for e in self._to_ask(asked) if registry.expert(e).reads == "embedding"]
        budget = deadline - time.perf_counter()
        results = await asyncio.gather(*(self._clients.ask(e, embedded.embedding, budget) for e in calls))
        results.extend(await asyncio.gather(*readers))
        by_expert = {r.expert: r for r in results}
        for expert in EXPERT_ENUMS:
            if expert not in by_expert:
                if expert not in deployed:
                    reason = "not deployed"
                elif asked is not None:
                    reason = "not requested in the options"
                else:
                    reason = UNWEIGHTED_REASON
                by_expert[expert] = ExpertResult(expert, orchestrator_pb2.EXPERT_STATUS_SKIPPED, reason)
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
                fuse, answered, self._fusion.parameters, self._fusion.prior, top_k
            )
        with step("orchestrator.name_places", places=len(fused.hypotheses)):
            places = await asyncio.to_thread(
                lambda: [self._places.name(h.lat_deg, h.lon_deg) for h in fused.hypotheses]
            )
        response = self._response(fused, places, by_expert, wire_options, embedded)
        if exif is not None:
            response.exif_gps.CopyFrom(exif_message(*exif))
            if wire_options.use_exif_gps:
                self._answer_with_exif(response, exif)
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
        return await _called("embedding", field, deadline, self.settings.embed_timeout_s, self._clients.embed, image)

    def _response(
        self, fused: FusedAnswer, places, by_expert: dict[str, ExpertResult], wire_options, embedded
    ) -> orchestrator_pb2.LocateResponse:
        hypotheses = [hypothesis_message(h, place_message(p)) for h, p in zip(fused.hypotheses, places, strict=True)]
        shares = fused.mixture.expert_weights
        outputs = []
        for expert, result in by_expert.items():
            output = orchestrator_pb2.ExpertOutput(
                expert=EXPERT_ENUMS[expert],
                status=result.status,
                status_message=result.message,
                fusion_weight=shares.get(expert, 0.0),
                latency_ms=result.latency_ms,
            )
            if result.model is not None:
                output.model.CopyFrom(result.model)
            if wire_options.include_expert_outputs:
                output.points.extend(result.wire_points)
                output.cells.extend(result.cells)
                output.text.extend(result.text)
            outputs.append(output)
        response = orchestrator_pb2.LocateResponse(
            best_guess=hypotheses[0],
            hypotheses=hypotheses,
            radius_50_km=fused.radius_50_km,
            radius_90_km=fused.radius_90_km,
            localizability=fused.localizability,
            answer_source=orchestrator_pb2.ANSWER_SOURCE_FUSION,
            expert_outputs=outputs,
            backbone=embedded.embedding.backbone,
            fusion=common_pb2.ModelInfo(name="geoloc-fusion", version=self._fusion.version),
        )
        if wire_options.include_distribution:
            lat, lon, weight, radius = mixture_points(fused.mixture)
            response.distribution.extend(
                common_pb2.WeightedPoint(lat_deg=float(a), lon_deg=float(o), weight=float(w), radius_km=float(r))
                for a, o, w, r in zip(lat, lon, weight, radius, strict=True)
            )
        return response

    def _answer_with_exif(self, response: orchestrator_pb2.LocateResponse, exif: tuple[float, float]) -> None:
        place = self._places.name(*exif)
        best = orchestrator_pb2.Hypothesis(
            lat_deg=exif[0],
            lon_deg=exif[1],
            probability=1.0,
            radius_50_km=EXIF_RADIUS_KM[0],
            radius_90_km=EXIF_RADIUS_KM[1],
            place=place_message(place),
        )
        response.best_guess.CopyFrom(best)
        del response.hypotheses[:]
        response.hypotheses.append(best)
        response.radius_50_km, response.radius_90_km = EXIF_RADIUS_KM
        response.localizability = 1.0
        response.answer_source = orchestrator_pb2.ANSWER_SOURCE_EXIF_GPS


async def _called(service: str, field: str | None, deadline: float, timeout_s: float, method, request):
    """`method(request)` of another service within min(timeout_s, the time left before `deadline`),
    its errors turned into this call's:
    - INVALID_ARGUMENT names the caller's `field`, when the request carried the caller's input;
    - with no `field` (the request was built here), INVALID_ARGUMENT and FAILED_PRECONDITION mean
      that the deployment's parts do not fit each other: FAILED_PRECONDITION;
    - DEADLINE_EXCEEDED stays; anything else is UNAVAILABLE, with a retry delay."""
    timeout = min(timeout_s, deadline - time.perf_counter())
    if timeout <= 0:
        raise DeadlineExceeded(f"the caller's deadline left no time to call the {service} service")
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        code, details = error.code(), error.details()
        if code == grpc.StatusCode.INVALID_ARGUMENT and field is not None:
            raise InvalidArgument(field, details.split(": ", 1)[-1]) from None
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            raise FailedPrecondition(f"the {service} service refused: {details}") from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(f"the {service} service did not answer within the caller's deadline") from None
        raise NotReady(
            f"the {service} service failed: {code.name}: {details}", retry_after_s=retry_delay_s(error) or 1.0
        ) from None


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

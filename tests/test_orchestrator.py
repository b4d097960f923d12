"""The orchestrator end to end: real Triton, the embedding service and every expert as their own
processes, the orchestrator on a real gRPC server on loopback, the shipped models and fusion."""

from __future__ import annotations

import asyncio
import io
import time
from importlib.util import find_spec
from pathlib import Path

import grpc
import pytest
from PIL import Image

from geoloc.common.sphere import haversine_km
from geoloc.common.server import serving
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.server import OrchestratorServicer, orchestrator_spec
from geoloc.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.servers import start_service, stop, wait_for_health

pytestmark = pytest.mark.timeout(600)

OK = orchestrator_pb2.EXPERT_STATUS_OK


# The `experts` fixture (tests/conftest.py) is the session's gallery, sampler and tokens processes,
# shared with other files: a test that kills or slows an expert starts its own.
# Every process of the suite shares this machine's two cores here, so the experts' own timeouts
# (seconds, set for a deployment) are lifted where a test is not about timeouts.
PATIENT = {"gallery_timeout_s": 30, "sampler_timeout_s": 30, "tokens_timeout_s": 30, "embed_timeout_s": 30}


def settings(embedding_address: str, experts: dict[str, str], **overrides) -> OrchestratorSettings:
    addresses = {f"{name}_address": address for name, address in experts.items()}
    return OrchestratorSettings(port=0, metrics_port=None, log_requests=False, embedding_address=embedding_address,
                                default_deadline_s=60, **{**addresses, **PATIENT, **overrides})


def locate_each(orchestrator: OrchestratorSettings, requests, timeout_s: float = 60, between=None) -> list:
    """Serves the orchestrator in-process, sends each (rpc, request) in turn; answers or errors.

    `between(i)` runs after the i-th call (to kill an expert mid-run, say)."""

    async def scenario():
        spec = orchestrator_spec(OrchestratorServicer(orchestrator))
        async with serving(orchestrator, [spec], ready_timeout_s=120) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
                results = []
                for i, (rpc, request) in enumerate(requests):
                    try:
                        started = time.perf_counter()
                        answer = await getattr(stub, rpc)(request, timeout=timeout_s)
                        results.append((answer, time.perf_counter() - started))
                    except grpc.aio.AioRpcError as error:
                        results.append((error, time.perf_counter() - started))
                    if between is not None:
                        await asyncio.to_thread(between, i)
                return results

    return asyncio.run(scenario())


def kauai() -> bytes:
    """The sample photo shipped in the geoclip package (Kauai, Hawai'i): not an Im2GPS photo."""
    return (Path(find_spec("geoclip").origin).parent / "images" / "Kauai.png").read_bytes()


def with_gps(photo: Path, lat: float, lon: float) -> bytes:
    """The photo re-encoded as a JPEG whose EXIF holds GPS coordinates."""
    image = Image.open(photo)
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)

    def dms(value: float):
        value = abs(value)
        degrees, minutes = int(value), int((value % 1) * 60)
        return (float(degrees), float(minutes), round((value * 3600) % 60, 4))

    gps.update({1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)})
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def locate(image: bytes, **options) -> tuple[str, orchestrator_pb2.LocateRequest]:
    return "Locate", orchestrator_pb2.LocateRequest(image=image, options=orchestrator_pb2.LocateOptions(**options))


def test_a_shipped_photo_is_located_by_every_expert_and_the_answer_is_whole(embedding_address, experts):
    (answer, _), = locate_each(settings(embedding_address, experts), [locate(kauai(), include_expert_outputs=True,
                                                                              include_distribution=True, top_k=3)])
    statuses = {o.expert: o.status for o in answer.expert_outputs}
    assert set(statuses.values()) == {OK} and len(statuses) == 4
    assert all(o.points and o.latency_ms > 0 and o.model.version for o in answer.expert_outputs)
    assert sum(o.fusion_weight for o in answer.expert_outputs) < 1  # the prior holds the rest
    best = answer.best_guess
    assert (best.lat_deg, best.lon_deg) == (answer.hypotheses[0].lat_deg, answer.hypotheses[0].lon_deg)
    assert 1 <= len(answer.hypotheses) <= 3 and all(h.place.kind for h in answer.hypotheses)
    assert 0 < answer.radius_50_km <= answer.radius_90_km and 0 <= answer.localizability <= 1
    assert answer.answer_source == orchestrator_pb2.ANSWER_SOURCE_FUSION and not answer.HasField("exif_gps")
    assert sum(p.weight for p in answer.distribution) == pytest.approx(1.0)
    assert answer.backbone.name == "efficientnet-lite2" and answer.fusion.version and answer.request_id
    assert answer.timings.total_ms >= answer.timings.embed_ms + answer.timings.experts_ms


def test_an_expert_killed_mid_run_leaves_a_partial_answer_that_names_it(embedding_address, experts, val_photos):
    process, address = start_service("tokens")
    wait_for_health(address, 120, process)
    photo = val_photos[0].read_bytes()
    try:
        results = locate_each(settings(embedding_address, {**experts, "tokens": address}),
                              [locate(photo), locate(photo)], between=lambda i: process.kill() if i == 0 else None)
    finally:
        stop(process)
    (before, _), (after, _) = results
    assert {o.expert: o.status for o in before.expert_outputs}[orchestrator_pb2.EXPERT_TOKENS] == OK
    tokens = next(o for o in after.expert_outputs if o.expert == orchestrator_pb2.EXPERT_TOKENS)
    assert tokens.status == orchestrator_pb2.EXPERT_STATUS_UNAVAILABLE and tokens.status_message and tokens.fusion_weight == 0
    assert [o.status for o in after.expert_outputs if o.expert != orchestrator_pb2.EXPERT_TOKENS] == [OK] * 3
    assert after.hypotheses and after.radius_90_km > 0


def test_a_deadline_shorter_than_the_slowest_expert_answers_from_the_others_in_time(embedding_address, experts, val_photos):
    """The sampler (its own process: it stays busy after the call) is asked for 1024 samples at 256
    steps, about 10 s of work; the caller allows 3 s."""
    process, address = start_service("sampler")
    wait_for_health(address, 120, process)
    try:
        slow = settings(embedding_address, {**experts, "sampler": address}, sampler_samples=1024, sampler_steps=256,
                        sampler_timeout_s=30)
        (answer, elapsed), = locate_each(slow, [locate(val_photos[1].read_bytes())], timeout_s=3.0)
    finally:
        stop(process)
    assert not isinstance(answer, grpc.aio.AioRpcError), answer
    statuses = {o.expert: o.status for o in answer.expert_outputs}
    assert statuses[orchestrator_pb2.EXPERT_SAMPLER_FLOW] == orchestrator_pb2.EXPERT_STATUS_DEADLINE_EXCEEDED
    assert statuses[orchestrator_pb2.EXPERT_GALLERY] == OK and statuses[orchestrator_pb2.EXPERT_TOKENS] == OK
    assert elapsed < 3.0 and answer.hypotheses


def test_exif_gps_is_reported_as_evidence_and_answers_only_when_asked(embedding_address, experts, val_photos):
    photo = with_gps(val_photos[2], -33.8568, 151.2153)  # the Sydney Opera House
    (plain, _), (asked, _) = locate_each(settings(embedding_address, experts),
                                         [locate(photo), locate(photo, use_exif_gps=True)])
    for answer in (plain, asked):
        assert (answer.exif_gps.lat_deg, answer.exif_gps.lon_deg) == pytest.approx((-33.8568, 151.2153), abs=1e-4)
    assert plain.answer_source == orchestrator_pb2.ANSWER_SOURCE_FUSION
    assert asked.answer_source == orchestrator_pb2.ANSWER_SOURCE_EXIF_GPS
    assert haversine_km(asked.best_guess.lat_deg, asked.best_guess.lon_deg, -33.8568, 151.2153) < 0.01
    assert asked.best_guess.place.country_code == "AU" and asked.radius_90_km < 1
    assert {o.status for o in asked.expert_outputs} == {OK}  # the experts were still asked and reported


def test_only_the_requested_experts_are_asked_and_a_subset_still_answers(embedding_address, experts, val_photos):
    (answer, _), = locate_each(settings(embedding_address, experts),
                               [locate(val_photos[3].read_bytes(), experts=[orchestrator_pb2.EXPERT_GALLERY])])
    statuses = {o.expert: o.status for o in answer.expert_outputs}
    assert statuses.pop(orchestrator_pb2.EXPERT_GALLERY) == OK
    assert set(statuses.values()) == {orchestrator_pb2.EXPERT_STATUS_SKIPPED} and answer.hypotheses


def test_locate_batch_answers_every_photo_in_order(embedding_address, experts, val_photos):
    images = [p.read_bytes() for p in val_photos[4:7]]
    request = orchestrator_pb2.LocateBatchRequest(images=images)
    (batch, _), *singles = locate_each(settings(embedding_address, experts),
                                       [("LocateBatch", request), *(locate(i) for i in images)])
    assert len(batch.responses) == 3
    for answer, (single, _) in zip(batch.responses, singles, strict=True):
        assert (answer.best_guess.lat_deg, answer.best_guess.lon_deg) == pytest.approx(
            (single.best_guess.lat_deg, single.best_guess.lon_deg), abs=1e-6)


BAD = [
    (locate(b""), "image"),
    (locate(b"not a photo at all"), "image"),
    (locate(kauai(), top_k=21), "options.top_k"),
    (locate(kauai(), top_k=-1), "options.top_k"),
    (locate(kauai(), experts=[orchestrator_pb2.EXPERT_UNSPECIFIED]), "options.experts[0]"),
    (locate(kauai(), experts=[orchestrator_pb2.EXPERT_GALLERY, 9]), "options.experts[1]"),
    (("LocateBatch", orchestrator_pb2.LocateBatchRequest()), "images"),
    (("LocateBatch", orchestrator_pb2.LocateBatchRequest(images=[kauai(), b""])), "images[1]"),
]


def test_bad_requests_get_invalid_argument_naming_the_field_and_the_server_keeps_serving(embedding_address, experts):
    *refused, (good, _) = locate_each(settings(embedding_address, experts, max_batch_images=4),
                                      [r for r, _ in BAD] + [locate(kauai())])
    for (_, field), (error, _) in zip(BAD, refused, strict=True):
        assert isinstance(error, grpc.aio.AioRpcError), field
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith(field), error.details()
    assert good.hypotheses

"""Text queries, end to end on loopback: CLIP's text tower on a real tritonserver (a tiny random
CLIP, tests/tiny_clip.py, in place of ViT-L/14's weights, which cannot be fetched here), the
embedding service's EmbedText, and the orchestrator's LocateText through the gallery service with
GeoCLIP's released image head over a real FAISS gallery."""

from __future__ import annotations

import shutil
import unicodedata

import grpc
import numpy as np
import pytest
import torch

from geoloc.common.ports import free_port
from geoloc.embedding.config import EmbeddingSettings
from geoloc.embedding.model_config import read_model_config
from geoloc.embedding.server import EmbeddingServicer, embedding_spec
from geoloc.embedding.triton_backbone import BackboneError, BackboneInfo
from geoloc.embedding.triton_text import check_twin
from geoloc.gallery.config import GallerySettings
from geoloc.gallery.server import GalleryServicer, gallery_spec
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.server import OrchestratorServicer, orchestrator_spec
from geoloc.tritonserver.launcher import DEFAULT_MODEL_REPOSITORY, TritonLaunch, TritonServer
from geoloc.v1 import (
    embedding_pb2,
    embedding_pb2_grpc,
    gallery_pb2,
    gallery_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
)
from tests.calls import assert_refused, refusal, served_in_background
from tests.servers import small_gallery
from tests.tiny_clip import tiny_clip_checkpoint

pytestmark = pytest.mark.integration  # Triton and three services on loopback
# Served on a free port, no /metrics, logging only what goes wrong.
QUIET = {"port": 0, "metrics_port": None, "log_level": "warning"}

TOWERS = ("clip_vit_l14", "clip_vit_l14_text")
LONG = "a lighthouse on a rocky coast under a grey sky " * 4  # past 77 tokens of the tiny tokenizer


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Triton serving both CLIP towers from one tiny checkpoint in the image tower's weights/."""
    repository = tmp_path_factory.mktemp("repository")
    for model in TOWERS:
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / model, repository / model)
    tiny_clip_checkpoint(repository / "clip_vit_l14" / "weights")
    launch = TritonLaunch(model_repository=repository, models=TOWERS, grpc_port=free_port(), metrics_port=None)
    with TritonServer(launch) as server:
        yield server, repository / "clip_vit_l14" / "weights"
    assert server.returncode == 0, server.log_tail()


def reference_text_features(weights, texts: list[str]) -> np.ndarray:
    """transformers' own CLIPModel.get_text_features on its own tokenizer, one text at a time."""
    from transformers import CLIPModel, CLIPTokenizer

    model, tokenizer = CLIPModel.from_pretrained(weights).eval(), CLIPTokenizer.from_pretrained(weights)
    rows = []
    with torch.no_grad():
        for text in texts:
            tokens = tokenizer([text], truncation=True, max_length=77, return_tensors="pt")
            features = model.get_text_features(**tokens)
            rows.append((features if torch.is_tensor(features) else features.pooler_output)[0].numpy())
    return np.stack(rows)


@pytest.fixture(scope="module")
def suite(clip, tmp_path_factory):
    """The embedding service (both towers), the gallery (GeoCLIP's released head over 2,000 real
    gallery points) and an orchestrator that deploys only these two, each served in this process."""
    server, _ = clip
    gallery_dir = small_gallery(tmp_path_factory.mktemp("gallery"), 2000)
    embedding = EmbeddingSettings(**QUIET, triton_url=server.grpc_url, model_name=TOWERS[0], text_model_name=TOWERS[1])
    gallery = GallerySettings(**QUIET, gallery_dir=gallery_dir, build_if_missing=False, head="clip")
    with (
        served_in_background(embedding, [embedding_spec(EmbeddingServicer(embedding))]) as embedding_port,
        served_in_background(gallery, [gallery_spec(GalleryServicer(gallery))]) as gallery_port,
    ):
        addresses = {"embedding": f"127.0.0.1:{embedding_port}", "gallery": f"127.0.0.1:{gallery_port}"}
        orchestrator = text_orchestrator(addresses["embedding"], addresses["gallery"])
        with served_in_background(orchestrator, [orchestrator_spec(OrchestratorServicer(orchestrator))]) as port:
            yield {**addresses, "orchestrator": f"127.0.0.1:{port}"}


def text_orchestrator(embedding: str, gallery: str) -> OrchestratorSettings:
    """An orchestrator deploying only an embedding service and a gallery (`none`: no gallery)."""
    return OrchestratorSettings(
        **QUIET,
        embedding_address=embedding,
        gallery_address=gallery,
        sampler_address="none",
        tokens_address="none",
        text_address="none",
    )


def locate_text_refusal(settings: OrchestratorSettings) -> grpc.RpcError:
    """The error LocateText("a beach") gets from an orchestrator served with `settings`."""
    with served_in_background(settings, [orchestrator_spec(OrchestratorServicer(settings))]) as port:
        orchestrator = stub(f"127.0.0.1:{port}", orchestrator_pb2_grpc.OrchestratorServiceStub)
        return refusal(orchestrator.LocateText, orchestrator_pb2.LocateTextRequest(query="a beach"))


def stub(address: str, stub_class):
    return stub_class(grpc.insecure_channel(address))


def test_triton_serves_the_text_tower_as_transformers_computes_it(clip):
    import tritonclient.grpc as triton_grpc

    server, weights = clip
    texts = ["the beach and the palm trees", "snow on the mountains", LONG]
    data = triton_grpc.InferInput("TEXT", [3, 1], "BYTES")
    data.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    with triton_grpc.InferenceServerClient(server.grpc_url) as client:
        result = client.infer(TOWERS[1], [data], client_timeout=60)
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), reference_text_features(weights, texts), atol=1e-5)
    assert result.as_numpy("TRUNCATED").ravel().tolist() == [False, False, True]


def test_the_gpu_config_of_the_text_tower_differs_only_in_its_instance_kind():
    cpu, gpu = read_model_config(TOWERS[1]), read_model_config(TOWERS[1], config_name="gpu")
    assert [g["kind"] for g in cpu.pop("instance_group")] == ["KIND_CPU"]
    assert [g["kind"] for g in gpu.pop("instance_group")] == ["KIND_GPU"]
    assert cpu == gpu


def test_embed_text_gives_the_text_towers_feature_named_as_the_photos_backbone(clip, suite):
    _, weights = clip
    embedding = stub(suite["embedding"], embedding_pb2_grpc.EmbeddingServiceStub)
    short = embedding.EmbedText(embedding_pb2.EmbedTextRequest(text="snow on the mountains"), timeout=60)
    long = embedding.EmbedText(embedding_pb2.EmbedTextRequest(text=LONG), timeout=60)
    expected = reference_text_features(weights, ["snow on the mountains", LONG])
    for answer, row in zip((short, long), expected, strict=True):
        assert answer.dimension == len(answer.embedding.values) == 768
        np.testing.assert_allclose(answer.embedding.values, row, atol=1e-5)
        assert answer.embedding.backbone.name == "clip-vit-l14"
    assert (short.truncated, long.truncated) == (False, True)


def test_locate_text_is_the_galleries_answer_to_the_text_embedding(suite):
    query = "a harbour with fishing boats"
    embedding = stub(suite["embedding"], embedding_pb2_grpc.EmbeddingServiceStub)
    gallery = stub(suite["gallery"], gallery_pb2_grpc.GalleryServiceStub)
    orchestrator = stub(suite["orchestrator"], orchestrator_pb2_grpc.OrchestratorServiceStub)
    embedded = embedding.EmbedText(embedding_pb2.EmbedTextRequest(text=query), timeout=60)
    searched = gallery.Search(gallery_pb2.SearchRequest(embedding=embedded.embedding, k=7), timeout=60)
    answer = orchestrator.LocateText(orchestrator_pb2.LocateTextRequest(query=query, top_k=7), timeout=60)
    got = [(m.lat_deg, m.lon_deg, m.probability) for m in answer.matches]
    assert got == [(p.lat_deg, p.lon_deg, p.weight) for p in searched.points]
    assert [m.probability for m in answer.matches] == sorted((m.probability for m in answer.matches), reverse=True)
    assert all(m.place.kind != orchestrator_pb2.PLACE_KIND_UNSPECIFIED for m in answer.matches)
    assert answer.backbone.name == "clip-vit-l14" and answer.gallery.name == "geoclip-gallery/clip-vit-l14"
    assert not answer.truncated and answer.request_id
    default = orchestrator.LocateText(orchestrator_pb2.LocateTextRequest(query=LONG), timeout=60)
    assert len(default.matches) == 5 and default.truncated


@pytest.mark.parametrize(
    ("query", "top_k", "field", "problem"),
    [
        ("", 0, "query", "is empty"),
        ("  \n\t ", 0, "query", "is empty"),
        ("x" * 1001, 0, "query", "has 1001 characters; at most 1000"),
        ("a beach\x00", 0, "query", "control characters (the first is U+0000)"),
        ("a beach", 101, "top_k", "100"),
        ("a beach", -1, "top_k", ""),
    ],
)
def test_a_bad_query_is_refused_by_field_and_the_next_is_answered(suite, query, top_k, field, problem):
    orchestrator = stub(suite["orchestrator"], orchestrator_pb2_grpc.OrchestratorServiceStub)
    error = refusal(orchestrator.LocateText, orchestrator_pb2.LocateTextRequest(query=query, top_k=top_k))
    assert_refused(error, field, problem)
    assert orchestrator.LocateText(orchestrator_pb2.LocateTextRequest(query="a beach", top_k=2), timeout=60).matches


def test_embed_text_refuses_bad_text_by_field(suite):
    embedding = stub(suite["embedding"], embedding_pb2_grpc.EmbeddingServiceStub)
    assert_refused(refusal(embedding.EmbedText, embedding_pb2.EmbedTextRequest(text=" ")), "text", "is empty")


def test_a_backbone_without_a_text_tower_answers_failed_precondition(embedding_address):
    """The session's embedding service serves EfficientNet-Lite2, which has no text tower; an
    orchestrator in front of it (its gallery address is never reached) says so too."""
    embedding = stub(embedding_address, embedding_pb2_grpc.EmbeddingServiceStub)
    error = refusal(embedding.EmbedText, embedding_pb2.EmbedTextRequest(text="a beach"))
    assert_refused(error, None, "served without a text tower", grpc.StatusCode.FAILED_PRECONDITION)
    error = locate_text_refusal(text_orchestrator(embedding_address, f"127.0.0.1:{free_port()}"))
    assert_refused(error, None, "without a text tower", grpc.StatusCode.FAILED_PRECONDITION)


def test_an_orchestrator_without_the_gallery_refuses_text_queries(embedding_address):
    error = locate_text_refusal(text_orchestrator(embedding_address, "none"))
    assert_refused(error, None, "gallery expert", grpc.StatusCode.FAILED_PRECONDITION)


def test_a_text_tower_of_another_backbone_or_width_is_refused_by_name():
    image = BackboneInfo("clip-vit-l14", "clip_vit_l14", 768, 32, False, None, "IMAGE", "EMBEDDING")
    tower = read_model_config(TOWERS[1])
    check_twin(tower, image)  # the shipped pair fits
    other = {**image.__dict__, "name": "efficientnet-lite2", "dimension": 1280, "model_name": "efficientnet_lite2"}
    with pytest.raises(BackboneError, match="768.*'clip-vit-l14'.*1280-d 'efficientnet-lite2'"):
        check_twin(tower, BackboneInfo(**other))
    without = {**tower, "output": [o for o in tower["output"] if o["name"] != "TRUNCATED"]}
    with pytest.raises(BackboneError, match="must output EMBEDDING and TRUNCATED"):
        check_twin(without, image)


def test_fuzzed_queries_are_answered_or_refused_naming_what_is_wrong(suite):
    """Any text and top_k: a valid pair gets top_k matches, most probable first; an invalid one
    INVALID_ARGUMENT naming query or top_k (tests/test_validation_fuzz.py's checks)."""
    from hypothesis import strategies as st

    from tests.test_validation_fuzz import fuzz_rpc

    def problems_of(request) -> set[str]:
        text, problems = request.query, set()
        control = any(unicodedata.category(c) == "Cc" and not c.isspace() for c in text)
        if not text.strip() or len(text) > 1000 or control:
            problems.add("query")
        if not 0 <= request.top_k <= 100:
            problems.add("top_k")
        return problems

    def check_answer(request, answer) -> None:
        assert len(answer.matches) == (request.top_k or 5)
        probabilities = [m.probability for m in answer.matches]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6

    texts = st.one_of(st.text(max_size=40), st.text(min_size=990, max_size=1010), st.just(" \t\n"))
    requests = st.builds(
        orchestrator_pb2.LocateTextRequest, query=texts, top_k=st.one_of(st.integers(-3, 103), st.just(0))
    )
    orchestrator = stub(suite["orchestrator"], orchestrator_pb2_grpc.OrchestratorServiceStub)
    codes = fuzz_rpc(orchestrator.LocateText, requests, problems_of, check_answer, 60)
    assert codes["OK"] and codes["INVALID_ARGUMENT"], codes

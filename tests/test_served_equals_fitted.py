"""What each expert's live service answers equals what the fitting path computes in-process.

The fusion is fitted on answers computed in-process (geoloc.training.expert_outputs for the experts
that read the backbone feature, geoloc.training.text_outputs for the text expert); the product
serves the answers each server computes. Both call the expert's one answer function with one
seeding rule (a photo's noise from the request's seed), so they must agree. This sends photos
(samples/kauai.jpg and synthetic scenes: no data beside the clone) through the real embedding
service on a real Triton, then asks every expert's real server, as its own process, exactly what
the orchestrator asks (the registry's request at the orchestrator's default settings), and
compares the points that the orchestrator fuses with the in-process answer for the same feature:
equal positions, weights and radii to float tolerance.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from geoloc import experts as registry
from geoloc.experts import EXPERT_TABLE
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.experts import asked_of
from geoloc.v1 import embedding_pb2

pytestmark = [pytest.mark.timeout(900)]

PHOTOS = 4  # kauai.jpg and three synthetic scenes
# The networks run in float32, and a batch of one (served) multiplies in another order than a batch
# of four (fitted): the flow sampler's 16 integration steps carry that to 1.9e-4 degrees (20 m) in
# 3 of 512 coordinates here. 1e-3 degrees (about 100 m) is float noise against samples spread over
# thousands of km, and far below what another seed moves (whole samples elsewhere).
POSITION_DEG = 1e-3
RELATIVE = 1e-4


@pytest.fixture(scope="module")
def embedded(photos, embedding_address) -> list[tuple[bytes, object]]:
    """(photo bytes, its Embedding message) for the first PHOTOS photos, from the live embedding service."""
    out = []
    with grpc.insecure_channel(embedding_address) as channel:
        stub = registry.SERVICES_BY_NAME["embedding"].stub_class()(channel)
        for path in photos[:PHOTOS]:
            image = path.read_bytes()
            out.append((image, stub.Embed(embedding_pb2.EmbedRequest(image=image), timeout=60).embedding))
    return out


def served_rows(entry, carried: list, address: str, asked: dict) -> list[np.ndarray]:
    """[points, 4] (lat, lon, weight, radius_km) of what the orchestrator fuses, per photo, from the live server."""
    rows = []
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = getattr(registry.SERVICES_BY_NAME[entry.service].stub_class()(channel), entry.rpc)
        for item in carried:
            answer = call(entry.request(item, asked), timeout=120)
            rows.append(np.array([[p.lat_deg, p.lon_deg, p.weight, p.radius_km] for p in entry.fused_points(answer)]))
    return rows


def assert_same_points(expert: str, served: np.ndarray, fitted: np.ndarray) -> None:
    """The served points against the in-process row, whose zero-weight padding the service does not send."""
    fitted = fitted[fitted[:, 2] > 0]
    assert served.shape == fitted.shape, f"{expert}: served {served.shape}, in-process {fitted.shape}"
    np.testing.assert_allclose(served[:, :2], fitted[:, :2], atol=POSITION_DEG, err_msg=f"{expert} positions")
    np.testing.assert_allclose(served[:, 2:], fitted[:, 2:], rtol=RELATIVE, atol=1e-9, err_msg=f"{expert} weights")


@pytest.fixture(scope="module")
def shipped_models():
    from geoloc.training.expert_outputs import ExpertModels

    return ExpertModels.shipped()


@pytest.mark.parametrize("expert", [e.name for e in EXPERT_TABLE if e.trained])
def test_embedding_experts_serve_what_is_fitted(expert, embedded, experts, shipped_models):
    from geoloc.training.expert_outputs import ExpertRequests, expert_answers

    entry = registry.expert(expert)
    settings = OrchestratorSettings()
    served = served_rows(entry, [e for _, e in embedded], experts[entry.service], asked_of(settings))
    features = np.array([list(e.values) for _, e in embedded], dtype=np.float32)
    fitted = expert_answers(expert, shipped_models[expert], features, ExpertRequests.of(settings))
    for row, answer in enumerate(served):
        assert_same_points(expert, answer, fitted[row])


def test_text_expert_serves_what_is_fitted(embedded, experts, tmp_path):
    """The text expert reads pixels: its served points against training/text_outputs' answers for the
    same photo files, read with the service's default settings (one sign drawn with a place name, so
    that at least one answer has points)."""
    from PIL import Image, ImageDraw, ImageFont

    from geoloc.training.text_outputs import MAX_POINTS

    sign = Image.new("RGB", (640, 320), (40, 90, 160))
    draw = ImageDraw.Draw(sign)
    draw.rectangle((40, 100, 600, 220), fill=(245, 245, 240))
    draw.text((70, 120), "MARSEILLE", font=ImageFont.load_default(size=72), fill=(10, 10, 10))
    paths = []
    for i, image in enumerate([*(image for image, _ in embedded), None]):
        path = tmp_path / f"photo{i}.jpg"
        if image is None:
            sign.save(path, quality=95)
        else:
            path.write_bytes(image)
        paths.append(path)
    entry = registry.expert("text")
    served = served_rows(entry, [p.read_bytes() for p in paths], experts["text"], asked_of(OrchestratorSettings()))
    fitted = entry.photo_answers_function()(paths, tmp_path / "cache")  # the one `geoloc cv` reads
    assert fitted.shape == (len(paths), MAX_POINTS, 4)
    assert len(served[-1]) > 0, "the sign names a city: the text expert should answer it"
    for row, answer in enumerate(served):
        assert_same_points("text", answer.reshape(-1, 4), fitted[row])

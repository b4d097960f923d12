"""The text expert on a real gRPC server: photos with text drawn by Pillow in Debian's fonts, read by
the real PP-OCRv4 models (and Tesseract where installed), answered with the real gazetteer."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.geo.sphere import haversine_km
from geoloc.text.config import DEFAULT_TESSERACT_LANGUAGES, TextSettings
from geoloc.text.places import script_likelihoods
from geoloc.text.server import TextServicer, text_spec
from geoloc.text.tesseract import tesseract_available
from geoloc.v1 import text_pb2, text_pb2_grpc
from tests.calls import assert_each_refused, call_each
from tests.photos import DEJAVU, NOTO_CJK, encode, sign_photo, synthetic_photo

pytestmark = pytest.mark.integration

needs_fonts = pytest.mark.skipif(
    not (DEJAVU.exists() and NOTO_CJK.exists()),
    reason="no DejaVu or Noto CJK font to draw signs with (Debian's fonts-dejavu-core, fonts-noto-cjk: "
    "scripts/setup.sh installs them as root)",
)
needs_tesseract = pytest.mark.skipif(
    not tesseract_available(DEFAULT_TESSERACT_LANGUAGES),
    reason="no libtesseract with its language packs: PP-OCR reads Cyrillic as Latin look-alikes "
    "(scripts/setup.sh installs them as root)",
)


def read(image, include_text: bool = True) -> text_pb2.ReadRequest:
    return text_pb2.ReadRequest(image=encode(image, "JPEG", quality=92), include_text=include_text)


@pytest.fixture(scope="module")
def answers():
    """One server, every request of this module in turn (loading the models takes seconds)."""
    if not (DEJAVU.exists() and NOTO_CJK.exists()):
        pytest.skip(needs_fonts.kwargs["reason"])
    requests = [
        read(sign_photo("Welcome to Lisbon", DEJAVU)),
        read(sign_photo("Добро пожаловать", DEJAVU, seed=1)),
        read(sign_photo("京都駅へようこそ", NOTO_CJK, seed=2)),
        read(synthetic_photo(3)),
        read(sign_photo("Welcome to Lisbon", DEJAVU), include_text=False),
        *(text_pb2.ReadRequest(image=bad) for bad, _ in BAD),
        read(sign_photo("Welcome to Lisbon", DEJAVU)),  # still serving after the bad ones
    ]
    settings = TextSettings(port=0, metrics_port=None, log_requests=False)
    return call_each(settings, text_spec(TextServicer(settings)), text_pb2_grpc.TextServiceStub, "Read", requests)


BAD = [
    (b"", "image"),
    (b"plain text, not a photo", "image"),
    (encode(synthetic_photo(0), "GIF"), "image"),
    (encode(synthetic_photo(0).resize((8, 8)), "PNG"), "image"),
]


def heaviest(answer):
    return max(answer.points, key=lambda p: p.weight)


@needs_fonts
def test_welcome_to_lisbon_is_located_within_25_km_of_lisbon(answers):
    answer = answers[0]
    top = heaviest(answer)
    assert haversine_km(top.lat_deg, top.lon_deg, 38.7223, -9.1393) < 25
    assert answer.places[0].name == "Lisbon" and answer.places[0].exact and answer.places[0].country_code == "PT"
    assert "Lisbon" in [line.text for line in answer.lines if line.used][0]
    assert answer.scripts[0] == "Latn" and answer.model.name.startswith("text/pp-ocrv4")
    line = answer.lines[0]
    xs, ys = [v.x for v in line.box], [v.y for v in line.box]
    assert len(line.box) == 4 and 0 <= min(xs) < max(xs) <= 640 and 0 <= min(ys) < max(ys) <= 400
    assert 0.8 <= line.confidence <= 1


@needs_fonts
@needs_tesseract
def test_cyrillic_text_points_to_countries_that_write_it(answers):
    answer = answers[1]
    assert "Cyrl" in answer.scripts and any(line.engine == "tesseract" for line in answer.lines)
    writers = {c for c, p in script_likelihoods()["Cyrl"].items() if p >= 0.2}
    shares = {c.country_code: c.probability for c in answer.countries}
    assert sum(p for c, p in shares.items() if c in writers) > 0.95 and max(shares, key=shares.get) == "RU"


@needs_fonts
def test_japanese_text_points_to_japan(answers):
    answer = answers[2]
    assert {c.country_code for c in answer.countries[:1]} == {"JP"}
    top = heaviest(answer)
    assert haversine_km(top.lat_deg, top.lon_deg, 35.0116, 135.7681) < 25  # Kyoto


@needs_fonts
def test_a_photo_without_text_gives_no_points(answers):
    answer = answers[3]
    assert list(answer.points) == [] and list(answer.places) == [] and list(answer.countries) == []


@needs_fonts
def test_the_text_read_travels_only_when_asked_for(answers):
    assert list(answers[4].lines) == [] and len(answers[4].points) == len(answers[0].points)
    assert np.allclose([p.weight for p in answers[4].points], [p.weight for p in answers[0].points])


@needs_fonts
def test_bad_photos_are_refused_naming_the_field_and_the_server_keeps_serving(answers):
    assert_each_refused(BAD, answers[5 : 5 + len(BAD)])
    assert answers[-1].places[0].name == "Lisbon"

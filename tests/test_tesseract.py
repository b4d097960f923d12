"""Tesseract loaded once through its C API (text/tesseract.py) reads a line as its command line does.

Real libtesseract and Debian's language packs, on signs drawn with real fonts: the engine's words
and confidences are compared with `tesseract --psm 7` run as a process on the same crop."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from geoloc.text.config import DEFAULT_TESSERACT_LANGUAGES, TextSettings
from geoloc.text.tesseract import LineReader, TesseractUnavailable, tesseract_available, words_of_tsv
from tests.photos import DEJAVU
from tests.tesseract_cli import cli_read_line, tesseract_binary

pytestmark = pytest.mark.skipif(
    not (tesseract_available(DEFAULT_TESSERACT_LANGUAGES) and tesseract_binary() and DEJAVU.exists()),
    reason="needs libtesseract, the tesseract binary, its language packs and the DejaVu font "
    "(scripts/setup.sh installs them as root)",
)

LINES = [
    "Добро пожаловать",  # Cyrillic: what PP-OCR misreads as Latin look-alikes
    "Καλώς ήρθατε",
    "Hauptbahnhof 200 m",
    "ברוכים הבאים",
    "Rua Augusta",
]


def line_crop(text: str, seed: int, inverted: bool = False) -> Image.Image:
    """One line of dark (or, inverted, pale) letters on a noisy board, as a detector's box crops it."""
    rng = np.random.default_rng(seed)
    font = ImageFont.truetype(str(DEJAVU), int(rng.integers(22, 40)))
    width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)) + 40
    board = rng.integers(200, 246, (font.size + 24, width, 3)) - rng.integers(0, 12, (font.size + 24, width, 1))
    image = Image.fromarray(board.astype(np.uint8))
    ImageDraw.Draw(image).text((20, 8), text, font=font, fill=(30, 30, 40))
    return Image.fromarray(255 - np.asarray(image)) if inverted else image


@pytest.fixture(scope="module")
def engine():
    reader = LineReader(DEFAULT_TESSERACT_LANGUAGES, timeout_s=30.0)
    yield reader
    reader.close()


@pytest.mark.parametrize("index", range(len(LINES)))
def test_the_engine_reads_a_line_as_the_command_line_does(engine, index):
    crop = line_crop(LINES[index], seed=index, inverted=index == 2)
    text, confidence = engine.read_line(crop)
    expected_text, expected_confidence = cli_read_line(crop, DEFAULT_TESSERACT_LANGUAGES)
    assert text == expected_text and confidence == pytest.approx(expected_confidence, abs=1e-6)
    assert 0 <= confidence <= 1


def test_a_cyrillic_line_is_read_in_cyrillic(engine):
    text, confidence = engine.read_line(line_crop(LINES[0], seed=0))
    assert sum("\u0400" <= c <= "\u04ff" for c in text) >= 10 and confidence > 0.5


def test_a_blank_crop_reads_as_the_command_line_does_with_little_confidence(engine):
    blank = Image.new("RGB", (200, 40), (235, 235, 230))
    text, confidence = engine.read_line(blank)
    expected_text, expected_confidence = cli_read_line(blank, DEFAULT_TESSERACT_LANGUAGES)
    assert text == expected_text and confidence == pytest.approx(expected_confidence, abs=1e-6) and confidence < 0.2


def test_readings_from_several_threads_at_once_equal_those_one_at_a_time(engine):
    crops = [line_crop(text, seed=10 + i) for i, text in enumerate(LINES * 2)]
    alone = [engine.read_line(crop) for crop in crops]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(engine.read_line, crops))
    assert together == alone


def test_a_line_past_its_deadline_reads_nothing():
    reader = LineReader(DEFAULT_TESSERACT_LANGUAGES, timeout_s=0.001)
    try:
        long_line = line_crop(" ".join(LINES), seed=3)
        assert reader.read_line(long_line) == ("", 0.0)
    finally:
        reader.close()


def test_a_closed_engine_refuses_to_read_rather_than_crash():
    reader = LineReader("eng", timeout_s=1.0)
    reader.close()
    reader.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        reader.read_line(line_crop("Rua Augusta", seed=0))


def test_languages_that_are_not_installed_are_refused_at_start():
    with pytest.raises(TesseractUnavailable, match="xx_not_a_language"):
        LineReader("eng+xx_not_a_language", timeout_s=1.0)
    assert not tesseract_available("xx_not_a_language")


def test_the_text_settings_use_tesseract_only_with_every_language_installed():
    missing = "eng+xx_not_a_language"
    assert TextSettings(tesseract="auto", tesseract_languages=missing).reader_options()["tesseract_languages"] == ""
    with pytest.raises(RuntimeError, match="xx_not_a_language"):
        TextSettings(tesseract="on", tesseract_languages=missing).reader_options()
    assert TextSettings(tesseract="off").reader_options()["tesseract_languages"] == ""
    assert TextSettings().reader_options()["tesseract_languages"] == DEFAULT_TESSERACT_LANGUAGES


def test_words_of_tsv_keeps_recognised_words_of_the_command_lines_output():
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
        "4\t1\t1\t1\t1\t0\t0\t0\t9\t9\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t0\t0\t9\t9\t91.5\tRua\n"
        "5\t1\t1\t1\t1\t2\t0\t0\t9\t9\t-1\t \n"
        "5\t1\t1\t1\t1\t3\t0\t0\t9\t9\t80\tAugusta\n"
    )
    assert words_of_tsv(tsv) == [("Rua", 91.5), ("Augusta", 80.0)]

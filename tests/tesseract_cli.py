"""Tesseract's command line, one process per line: the reference that text/tesseract.py's engine is
compared with (tests/test_tesseract.py) and timed against (bench/text_read.py). The text expert
read this way before it loaded libtesseract once per process."""

from __future__ import annotations

import io
import shutil
import subprocess

from PIL import Image

from geoloc.text.tesseract import PSM_SINGLE_LINE, line_of_words, words_of_tsv


def tesseract_binary() -> str | None:
    return shutil.which("tesseract")


def cli_read_line(
    crop: Image.Image, languages: str, timeout_s: float = 30.0, environment: dict[str, str] | None = None
) -> tuple[str, float]:
    """`tesseract stdin stdout -l languages --psm 7 tsv` on the crop as a PNG, in `environment`
    (default: this process's): its words joined and their mean confidence in [0, 1]."""
    encoded = io.BytesIO()
    crop.convert("RGB").save(encoded, format="PNG")
    command = ["tesseract", "stdin", "stdout", "-l", languages, "--psm", str(PSM_SINGLE_LINE), "tsv"]
    done = subprocess.run(
        command, input=encoded.getvalue(), capture_output=True, timeout=timeout_s, check=True, env=environment
    )
    return line_of_words(words_of_tsv(done.stdout.decode("utf-8", "replace")))

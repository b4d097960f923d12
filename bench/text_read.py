"""The text expert's cost per photo: reading (PP-OCRv4, with and without Tesseract) and answering.

For each reader setting, one run over the same photos: the Im2GPS3k val photos (the split's
384 px size; --photos of them, in file order) where the data root holds them, else seeded
synthetic scenes with and without signs. Prints, per setting, the p50 and p90 milliseconds of
`TextReader.read` on a decoded photo, the share of photos with a line read at 0.8 or more, and
the p50's ratio to the cheapest setting measured in the same run (the detector at its smallest
input, which misses small text): ratios, not absolute times, are what compare across machines.
Where the tesseract binary is installed too, the default reader is also run with Tesseract as a
process per box (as the text expert read before it loaded libtesseract once), and the two
readers' lines are compared. The answer (evidence from the lines: gazetteer, language, points)
is timed once, on the default setting's lines.

    .venv/bin/python bench/text_read.py [--photos 120]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from geoloc.common.paths import data_root
from geoloc.text.config import DEFAULT_TESSERACT_LANGUAGES, TextSettings
from geoloc.text.reading import TESSERACT_TIMEOUT_S, TextReader
from geoloc.text.tesseract import tesseract_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/photos.py draws the synthetic ones
from tests.tesseract_cli import cli_read_line, tesseract_binary


def photos(count: int) -> tuple[list[Image.Image], str]:
    folder = data_root() / "im2gps3k" / "val" / "images"
    if folder.is_dir():
        files = sorted(folder.iterdir())[:count]
        return [Image.open(f).convert("RGB") for f in files], f"{len(files)} Im2GPS3k val photos"
    from tests.photos import DEJAVU, sign_photo, synthetic_photo

    signs = ["Welcome to Lisbon", "Rua Augusta", "Hauptbahnhof", "Exit", "Sheraton Saigon"]
    made = [synthetic_photo(i) for i in range(count // 2)]
    if DEJAVU.exists():
        made += [sign_photo(signs[i % len(signs)], DEJAVU, seed=i) for i in range(count - len(made))]
    return made, f"{len(made)} synthetic photos (half with a sign): no Im2GPS3k val under the data root"


BY_PROCESS = "PP-OCR + Tesseract as a process per box (before)"


class ReaderByProcess(TextReader):
    """The default reader with Tesseract run as a process per box, as it was before it was loaded
    once: in the server's environment of then, without OMP_THREAD_LIMIT."""

    def tesseract_line(self, crop: Image.Image) -> tuple[str, float]:
        then = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
        return cli_read_line(crop, self.tesseract_languages, timeout_s=TESSERACT_TIMEOUT_S, environment=then)


def timed(reader: TextReader, images: list[Image.Image]) -> tuple[np.ndarray, float, list]:
    times, read = [], []
    for image in images:
        started = time.perf_counter()
        read.append(reader.read(image))
        times.append(1000 * (time.perf_counter() - started))
    sure = np.mean([any(line.confidence >= 0.8 for line in lines) for lines in read])
    return np.array(times), float(sure), read


def main() -> None:
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # as the text server runs Tesseract (text/tesseract.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=120)
    args = parser.parse_args()
    images, what = photos(args.photos)
    settings = TextSettings()
    options = settings.reader_options()
    setups = {
        "detector at 384 px (floor)": {**options, "detector_min_side": 384, "tesseract_languages": ""},
        "PP-OCR, detector at 480 px": {**options, "detector_min_side": 480, "tesseract_languages": ""},
        "PP-OCR, detector at 640 px": {**options, "tesseract_languages": ""},
        "PP-OCR, detector at 736 px (RapidOCR's own)": {**options, "detector_min_side": 736, "tesseract_languages": ""},
    }
    with_tesseract = {**options, "tesseract_languages": DEFAULT_TESSERACT_LANGUAGES}
    if tesseract_available(DEFAULT_TESSERACT_LANGUAGES):
        setups["PP-OCR + Tesseract, 640 px (default here)"] = with_tesseract
        if tesseract_binary():
            setups[BY_PROCESS] = with_tesseract
    print(f"{what}; default reader options: {options}\n")
    print("| reader | p50 ms | p90 ms | photos with a line ≥ 0.8 | p50 ÷ floor |")
    print("|---|---|---|---|---|")
    floor, default_lines, readings, same = None, None, {}, None
    for name, setup in setups.items():
        reader = TextReader(**setup) if name != BY_PROCESS else ReaderByProcess(**setup)
        reader.read(images[0])  # the first run loads the sessions
        times, sure, read = timed(reader, images)
        p50 = float(np.percentile(times, 50))
        floor = floor or p50
        if setup == options:
            default_lines = read
        if name == BY_PROCESS:
            same = read == readings.get("PP-OCR + Tesseract, 640 px (default here)")
        readings[name] = read
        print(f"| {name} | {p50:.0f} | {np.percentile(times, 90):.0f} | {sure:.1%} | {p50 / floor:.2f} |", flush=True)
    if same is not None:
        print(f"\nTesseract by process read every photo's lines as the loaded engine did: {same}")
    answerer = settings.answerer()
    started = time.perf_counter()
    for lines in default_lines or []:
        answerer.answer(lines)
    per_photo = 1000 * (time.perf_counter() - started) / max(1, len(default_lines or []))
    print(f"\nanswering from the default setting's lines: {per_photo:.2f} ms a photo")


if __name__ == "__main__":
    main()

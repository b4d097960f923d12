"""Reading the text in a photo: PP-OCRv4 on onnxruntime, and Tesseract for the scripts it cannot read.

The detector, recogniser and angle classifier are the ONNX models that ship inside the
rapidocr-onnxruntime wheel; nothing is downloaded. PP-OCRv4's recogniser reads Latin and Chinese
characters (kana among them): Cyrillic, Greek or Hebrew it reads as look-alike Latin letters,
often confidently ("Добро пожаловать" as "o6pOnOKanOBaTb", 0.82). Where Tesseract is installed
(Debian's tesseract-ocr with its language data), each box the detector found is also read by
Tesseract, and its reading replaces PP-OCR's when it is in a script PP-OCR cannot read. Boxes
PP-OCR read as Chinese or kana, or as Latin with near certainty, are left alone. Tesseract is
loaded once, through its C API, on one thread (text/tesseract.py); with nine languages a box
costs about 50 ms: only photos with text pay it, and at most `tesseract_boxes` boxes a photo.

The photo is shrunk so that its longest side is at most `max_side` before anything reads it,
and the detector works on a copy whose shorter side is `detector_min_side` (photos are enlarged
to it, because PP-OCR misses small text below it): together they bound the cost of a photo
whatever its size. Boxes are reported in the pixels of the photo as sent (EXIF orientation applied).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from geoloc.text.scripts import script_counts
from geoloc.text.tesseract import LineReader

TESSERACT_TIMEOUT_S = 5.0
# Scripts that PP-OCRv4's recogniser cannot read; Tesseract's reading of a box in one of these wins.
PP_OCR_SCRIPTS = frozenset({"Latn", "Hani", "Hira", "Kana"})


@dataclass(frozen=True)
class ReadLine:
    text: str
    confidence: float  # in [0, 1]
    box: tuple[tuple[float, float], ...]  # four corners (x, y), in the photo's pixels
    engine: str  # "pp-ocrv4" or "tesseract"


def shrunk(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """(the image with its longest side at most max_side, the factor from its pixels to the original's)."""
    scale = max(image.size) / max_side
    if scale <= 1:
        return image, 1.0
    size = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
    return image.resize(size, Image.Resampling.BILINEAR), image.width / size[0]


class TextReader:
    """Reads a photo's lines of text. `tesseract_languages` empty: PP-OCR alone."""

    def __init__(
        self,
        max_side: int = 1024,
        detector_min_side: int = 480,
        tesseract_languages: str = "",
        tesseract_boxes: int = 4,
        tesseract_below_confidence: float = 0.95,
        threads: int = 0,
    ):
        from rapidocr_onnxruntime import RapidOCR

        self.max_side = max_side
        # text_score 0: every box comes back with its reading and confidence; the answer filters.
        # onnxruntime sizes its pool by the machine's cores, not a container's CPU limit.
        pool = {"intra_op_num_threads": threads} if threads > 0 else {}
        self._ocr = RapidOCR(det_limit_type="min", det_limit_side_len=detector_min_side, text_score=0.0, **pool)
        self.tesseract_languages = tesseract_languages
        self.tesseract_boxes = tesseract_boxes
        self.tesseract_below_confidence = tesseract_below_confidence
        self._tesseract = LineReader(tesseract_languages, TESSERACT_TIMEOUT_S) if tesseract_languages else None

    @property
    def engines(self) -> str:
        return "pp-ocrv4" + (f"+tesseract({self.tesseract_languages})" if self.tesseract_languages else "")

    def read(self, image: Image.Image) -> list[ReadLine]:
        """The photo's lines, most confident first."""
        small, scale = shrunk(image.convert("RGB"), self.max_side)
        pixels = np.asarray(small)[:, :, ::-1]  # RapidOCR expects OpenCV's BGR order
        found, _ = self._ocr(pixels)
        lines = []
        for rank, (corners, text, score) in enumerate(sorted(found or [], key=_area, reverse=True)):
            line = ReadLine(text, float(score), tuple((x * scale, y * scale) for x, y in corners), "pp-ocrv4")
            if self.tesseract_languages and rank < self.tesseract_boxes and self._worth_a_second_reading(line):
                line = self._with_tesseract(small, corners, scale, line)
            lines.append(line)
        return sorted(lines, key=lambda line: -line.confidence)

    def _worth_a_second_reading(self, line: ReadLine) -> bool:
        """PP-OCR reads Chinese and kana well, and a near-certain Latin reading is Latin text: only the
        rest may be another script misread."""
        scripts = script_counts(line.text)
        cjk = sum(n for s, n in scripts.items() if s != "Latn")
        return not (cjk and cjk >= scripts.get("Latn", 0)) and line.confidence < self.tesseract_below_confidence

    def _with_tesseract(self, image: Image.Image, corners, scale: float, line: ReadLine) -> ReadLine:
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        pad = 0.15 * (max(ys) - min(ys))
        crop = image.crop((max(0, min(xs) - pad), max(0, min(ys) - pad), max(xs) + pad, max(ys) + pad))
        text, confidence = self.tesseract_line(crop)
        scripts = script_counts(text)
        other = sum(n for s, n in scripts.items() if s not in PP_OCR_SCRIPTS)
        if other >= 3 and other > sum(scripts.values()) / 2:
            return ReadLine(text, confidence, line.box, "tesseract")
        return line

    def tesseract_line(self, crop: Image.Image) -> tuple[str, float]:
        """Tesseract's reading of one line of text and its mean word confidence in [0, 1];
        ("", 0) when it reads nothing or passes TESSERACT_TIMEOUT_S."""
        return self._tesseract.read_line(crop)


def _area(found) -> float:
    corners = np.asarray(found[0], dtype=np.float64)
    x, y = corners[:, 0], corners[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

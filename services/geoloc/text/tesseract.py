"""Tesseract through its C API: libtesseract loaded once per process with ctypes, its languages once.

A `tesseract` process per box paid for loading nine languages' models on every box, about half
of each reading; one engine loaded at start pays it once. Run on one OpenMP thread (see
_library), a box then costs about 50 ms instead of 0.2 to 1 s. The engine reads one line (page
segmentation mode 7, as `tesseract --psm 7` does) from RGB pixels and reports its words with
Tesseract's own TSV, so that its readings are the command line's on the same crop
(tests/test_tesseract.py compares them where the binary is installed).

An engine is not safe to use from two threads at once: `LineReader` serialises its readings with
a lock. The text service's CPU is taken by PP-OCR between readings, so one engine per process is
enough; more throughput is more pods.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import ctypes.util
import functools
import io
import itertools
import os
import threading

import numpy as np
from PIL import Image

from geoloc.common.logs import get_logger

PSM_SINGLE_LINE = 7
WORD_LEVEL = "5"  # TSV rows of level 5 are words
# The command line prints the TSV's columns as a header; the API does not.
TSV_FIELDS = (
    *("level", "page_num", "block_num", "par_num", "line_num", "word_num"),
    *("left", "top", "width", "height", "conf", "text"),
)


class TesseractUnavailable(RuntimeError):
    """libtesseract, or one of the languages asked for, is not installed."""


@functools.cache
def _library() -> ctypes.CDLL:
    found = ctypes.util.find_library("tesseract")
    if found is None:
        raise TesseractUnavailable("libtesseract is not installed (Debian: tesseract-ocr)")
    # Tesseract runs each network layer on 4 OpenMP threads, which on a busy CPU spin far more than
    # they compute: on one thread a line reads about 7 times faster (2 cores, 9 languages). libgomp
    # reads OMP_THREAD_LIMIT once, as it loads, and for the whole process (torch's threads too, where
    # torch shares it), so the limit is the process's to set: the text server sets it at start.
    if os.environ.get("OMP_THREAD_LIMIT") != "1":
        get_logger("geoloc.text").warning(
            "tesseract_openmp_threads",
            detail="OMP_THREAD_LIMIT is not 1 in this process, so Tesseract runs on several OpenMP threads: "
            "several times slower on a busy CPU (the text server sets it; python -m geoloc.text.server)",
        )
    lib = ctypes.CDLL(found)
    handle, text, cstr, c_int = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    signatures = {
        "TessBaseAPICreate": ([], handle),
        "TessBaseAPIDelete": ([handle], None),
        "TessBaseAPIEnd": ([handle], None),
        "TessBaseAPIInit3": ([handle, cstr, cstr], c_int),
        "TessBaseAPISetVariable": ([handle, cstr, cstr], c_int),
        "TessBaseAPISetPageSegMode": ([handle, c_int], None),
        "TessBaseAPISetImage": ([handle, ctypes.c_void_p, c_int, c_int, c_int, c_int], None),
        "TessBaseAPIRecognize": ([handle, ctypes.c_void_p], c_int),
        "TessBaseAPIGetTsvText": ([handle, c_int], text),
        "TessBaseAPIClear": ([handle], None),
        "TessBaseAPIGetLoadedLanguagesAsVector": ([handle], ctypes.POINTER(ctypes.c_char_p)),
        "TessDeleteText": ([text], None),
        "TessDeleteTextArray": ([ctypes.POINTER(ctypes.c_char_p)], None),
        "TessMonitorCreate": ([], handle),
        "TessMonitorDelete": ([handle], None),
        "TessMonitorSetDeadlineMSecs": ([handle, c_int], None),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = arguments, result
    return lib


@functools.cache
def tesseract_available(languages: str = "eng") -> bool:
    """Whether Tesseract can be loaded here with these languages (an engine is started to find out)."""
    try:
        LineReader(languages, timeout_s=1.0).close()
    except (TesseractUnavailable, OSError):
        return False
    return True


def words_of_tsv(tsv: str) -> list[tuple[str, float]]:
    """(word, confidence 0–100) of each recognised word in Tesseract's TSV output."""
    rows = csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE, fieldnames=TSV_FIELDS)
    return [
        (row["text"], float(row["conf"]))
        for row in rows
        if row["level"] == WORD_LEVEL and (row["text"] or "").strip() and float(row["conf"]) >= 0
    ]


def line_of_words(words: list[tuple[str, float]]) -> tuple[str, float]:
    """The words joined, and their mean confidence in [0, 1]; ("", 0) for none."""
    if not words:
        return "", 0.0
    return " ".join(w for w, _ in words), float(np.mean([c for _, c in words]) / 100.0)


class LineReader:
    """Tesseract loaded with `languages` ("eng+rus+..."), reading one line of text at a time."""

    def __init__(self, languages: str, timeout_s: float):
        lib = _library()
        self._lib, self._timeout_ms = lib, max(1, int(timeout_s * 1000))
        self._lock = threading.Lock()
        self._api = lib.TessBaseAPICreate()
        # Init3 succeeds when any of the languages loads: each one asked for must have.
        missing = sorted(set(languages.split("+")) - self._initialise(languages))
        if missing:
            self.close()
            raise TesseractUnavailable(f"Tesseract has no language data for {', '.join(missing)} (asked {languages!r})")
        # Its warnings (an image without a resolution, as every crop is) would go to the server's stderr.
        lib.TessBaseAPISetVariable(self._api, b"debug_file", b"/dev/null")
        lib.TessBaseAPISetPageSegMode(self._api, PSM_SINGLE_LINE)

    def _initialise(self, languages: str) -> set[str]:
        """Loads the languages into the engine; those that did load."""
        if self._lib.TessBaseAPIInit3(self._api, None, languages.encode()) != 0:
            return set()
        names = self._lib.TessBaseAPIGetLoadedLanguagesAsVector(self._api)
        loaded = set(itertools.takewhile(bool, names))
        self._lib.TessDeleteTextArray(names)
        return {name.decode() for name in loaded}

    def read_line(self, crop: Image.Image) -> tuple[str, float]:
        """The line's text and its mean word confidence in [0, 1]; ("", 0) when Tesseract reads
        nothing or passes its deadline."""
        pixels = np.ascontiguousarray(np.asarray(crop.convert("RGB"), dtype=np.uint8))
        height, width, depth = pixels.shape
        with self._lock:
            lib, api = self._lib, self._api
            if not api:  # a null engine would crash the process, not raise
                raise RuntimeError("this Tesseract engine is closed")
            lib.TessBaseAPISetImage(api, pixels.ctypes.data, width, height, depth, width * depth)
            monitor = lib.TessMonitorCreate()
            try:
                lib.TessMonitorSetDeadlineMSecs(monitor, self._timeout_ms)
                if lib.TessBaseAPIRecognize(api, monitor) != 0:
                    return "", 0.0
                text = lib.TessBaseAPIGetTsvText(api, 0)
                try:
                    tsv = ctypes.string_at(text).decode("utf-8", "replace") if text else ""
                finally:
                    lib.TessDeleteText(text)
            finally:
                lib.TessMonitorDelete(monitor)
                lib.TessBaseAPIClear(api)
        return line_of_words(words_of_tsv(tsv))

    def close(self) -> None:
        with self._lock:
            if self._api:
                self._lib.TessBaseAPIEnd(self._api)
                self._lib.TessBaseAPIDelete(self._api)
                self._api = None

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown the library may be gone already
            self.close()

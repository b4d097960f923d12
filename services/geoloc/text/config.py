"""Settings of the text expert, from GEOLOC_TEXT_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geoloc.common.photos import PhotoLimits
from geoloc.common.settings import MIB, ServerSettings
from geoloc.text.country_prior import SHIPPED_COUNTRY_PRIOR
from geoloc.text.evidence import EvidenceSettings

# Scripts that PP-OCR cannot read, in Debian's Tesseract language packs (tesseract-ocr-rus, ...);
# eng keeps Latin text Latin.
DEFAULT_TESSERACT_LANGUAGES = "eng+rus+ell+heb+ara+tha+kor+hin+kat"
_EVIDENCE = EvidenceSettings()


class TextSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_TEXT_")

    country_prior: Path = Field(SHIPPED_COUNTRY_PRIOR, description="The prior by country (geoloc train text).")
    max_image_bytes: int = Field(16 * MIB, gt=0, description="Largest encoded photo accepted.")
    max_image_pixels: int = Field(64_000_000, gt=0, description="Largest width x height accepted, checked first.")
    min_image_side: int = Field(32, gt=0, description="Smallest width or height accepted, in pixels.")
    max_side: int = Field(1024, ge=64, description="The photo is shrunk to this longest side before it is read.")
    detector_min_side: int = Field(
        480,
        ge=32,
        description="The text detector's input: the photo with this shorter side (enlarged if smaller). At 480 "
        "the cross-validated fused answer is that of 640, for about half the detector's time (docs/evaluation.md).",
    )
    tesseract: str = Field(
        "auto",
        description="'auto': read with Tesseract too where its binary is installed; 'off': PP-OCR alone; "
        "'on': require it (start-up fails without it).",
        pattern="^(auto|on|off)$",
    )
    tesseract_languages: str = Field(DEFAULT_TESSERACT_LANGUAGES, description="Tesseract's -l languages.")
    tesseract_boxes: int = Field(4, ge=0, description="The most boxes a photo has read a second time by Tesseract.")
    threads: int = Field(
        0, ge=0, description="onnxruntime's threads for reading; 0: one per core of the machine (not of a container)."
    )
    language_low_accuracy: bool = Field(
        False, description="lingua's low-accuracy mode: ~130 MB instead of ~1 GB, worse on short text."
    )
    min_confidence: float = Field(_EVIDENCE.min_confidence, ge=0, le=1, description="Less sure lines are unused.")
    min_letters: int = Field(_EVIDENCE.min_letters, ge=1, description="Lines with fewer letters are unused.")
    place_share: float = Field(_EVIDENCE.place_share, ge=0, le=1, description="Mass on named places, when any.")

    def photo_limits(self) -> PhotoLimits:
        return PhotoLimits(self.max_image_bytes, self.max_image_pixels, self.min_image_side)

    def evidence(self) -> EvidenceSettings:
        return EvidenceSettings(
            min_confidence=self.min_confidence, min_letters=self.min_letters, place_share=self.place_share
        )

    def answerer(self):
        """The TextAnswerer these settings describe, its gazetteer and language models loaded (seconds)."""
        from geoloc.text.country_prior import load_country_prior
        from geoloc.text.evidence import LanguageDetector, TextAnswerer
        from geoloc.text.gazetteer import Gazetteer

        detector = LanguageDetector(low_accuracy=self.language_low_accuracy)
        return TextAnswerer(Gazetteer(), detector, load_country_prior(self.country_prior), self.evidence())

    def reader_options(self) -> dict:
        """TextReader's arguments; Tesseract's languages empty when it is off or not installed."""
        from geoloc.text.tesseract import tesseract_available

        installed = self.tesseract != "off" and tesseract_available(self.tesseract_languages)
        if self.tesseract == "on" and not installed:
            raise RuntimeError(
                f"GEOLOC_TEXT_TESSERACT=on, but libtesseract with the languages {self.tesseract_languages!r} "
                "is not installed (Debian: tesseract-ocr and its tesseract-ocr-* language packs)"
            )
        return {
            "max_side": self.max_side,
            "detector_min_side": self.detector_min_side,
            "tesseract_languages": self.tesseract_languages if installed else "",
            "tesseract_boxes": self.tesseract_boxes,
        }

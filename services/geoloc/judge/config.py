"""Settings of the judge, from GEOLOC_JUDGE_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import SettingsConfigDict

from geoloc.common.photos import PhotoLimits
from geoloc.common.settings import MIB, PemFile, ServerSettings

Mode = Literal["pool_selection", "free_generation"]


def key_file_with_a_key(path: Path | None) -> Path | None:
    """`path` itself (None passes); ValueError unless it is a readable file holding a key.

    Checked when the settings are read, so that a Secret mounted at the wrong path stops the
    process at start-up, naming the variable and the path, not at the first call."""
    if path is None:
        return None
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"the API key file {path} is missing or not readable")
    if not path.read_text(errors="replace").strip():
        raise ValueError(f"the API key file {path} is empty")
    return path


KeyFile = Annotated[Path | None, AfterValidator(key_file_with_a_key)]


class JudgeSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_JUDGE_")

    url: str = Field(
        "",
        description="The chat-completions endpoint's base URL (OpenAI-compatible, e.g. http://127.0.0.1:8000/v1); "
        "empty: the judge is off and its calls answer FAILED_PRECONDITION.",
    )
    model: str = Field("", description="The model to ask, as the endpoint names it; required with URL.")
    api_key_file: KeyFile = Field(
        None,
        description="A file holding the endpoint's API key (a mounted Secret), read at start-up; a missing, "
        "unreadable or empty file stops the service. Unset: no key is sent (local endpoints).",
    )
    ca_file: PemFile = Field(
        None,
        description="The CA that signed an https endpoint's certificate; unset: the system's CAs. Always verified.",
    )
    default_mode: Mode = Field(
        "pool_selection",
        description="The mode of a request that leaves it unset: 'pool_selection' (choose a candidate) or "
        "'free_generation' (the candidates as hints); free generation for a request without candidates.",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        description="The most one Judge call may spend on the endpoint, retries included; a shorter "
        "caller deadline wins.",
    )
    max_concurrent_calls: int = Field(4, ge=1, description="Calls to the endpoint at once; the others wait their turn.")
    max_retries: int = Field(
        2, ge=0, description="Retries of a call the endpoint refused with 429 or 5xx, or whose connection failed."
    )
    image_max_side_px: int = Field(
        512, ge=64, description="The photo is shrunk to this longest side before it is sent."
    )
    temperature: float = Field(0.7, ge=0, le=2, description="The model's sampling temperature.")
    max_tokens: int = Field(200, ge=16, description="The most tokens the model may answer with.")
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive endpoint failures (down, 5xx, timeout) that open the circuit breaker."
    )
    breaker_open_s: float = Field(
        30.0, gt=0, description="How long an open breaker refuses calls at once before it lets one trial call through."
    )
    max_candidates: int = Field(32, ge=1, le=1000, description="The most candidates one request may carry.")
    max_place_chars: int = Field(200, ge=1, description="Longest candidate place name accepted, in characters.")
    max_response_bytes: int = Field(
        1 * MIB, ge=1024, description="Largest endpoint response read; a larger one is an unusable reply."
    )
    max_image_bytes: int = Field(16 * MIB, gt=0, description="Largest encoded photo accepted.")
    max_image_pixels: int = Field(64_000_000, gt=0, description="Largest width x height accepted, checked first.")
    min_image_side: int = Field(32, gt=0, description="Smallest width or height accepted, in pixels.")

    @model_validator(mode="after")
    def _a_model_for_the_endpoint(self) -> JudgeSettings:
        if self.url and not self.model:
            raise ValueError("url is set but model is empty: name the model the endpoint serves")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def api_key(self) -> str | None:
        """The key the file holds, stripped of whitespace (a Secret's trailing newline); None without a file."""
        if self.api_key_file is None:
            return None
        return self.api_key_file.read_text().strip()

    def photo_limits(self) -> PhotoLimits:
        return PhotoLimits(self.max_image_bytes, self.max_image_pixels, self.min_image_side)

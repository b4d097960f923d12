"""Settings of the tokens service, from GEOLOC_TOKENS_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geoloc.common.settings import BundleSettings, ServerSettings
from geoloc.tokens.model import SHIPPED_TOKENS


class TokensSettings(ServerSettings, BundleSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_TOKENS_")
    BUNDLE_REPLACES = ("checkpoint",)

    checkpoint: Path = Field(
        SHIPPED_TOKENS / "decoder.pt", description="The token decoder checkpoint (geoloc train tokens)."
    )
    default_strategy: Literal["greedy", "beam", "sample"] = Field(
        "beam", description="The strategy used when a request leaves it unset."
    )
    default_beam_width: int = Field(5, ge=1, description="Beam width when a request asks for 0.")
    max_beam_width: int = Field(64, ge=1, description="The widest beam one request may ask for.")
    default_samples: int = Field(30, ge=1, description="Sequences sampled when a request asks for 0.")
    max_samples: int = Field(1024, ge=1, description="The most sequences one request may sample.")
    default_temperature: float = Field(0.7, gt=0, description="Sampling temperature when a request leaves it unset.")
    max_temperature: float = Field(10.0, gt=0, description="The highest sampling temperature accepted.")
    max_neighbors: int = Field(1000, ge=0, description="The most neighbours one request may carry.")
    max_batch: int = Field(
        16, ge=1, description="The most concurrent decodes (same strategy and beam) run as one batch."
    )
    use_gpu: bool = Field(False, description="Run the decoder on CUDA when it is available.")

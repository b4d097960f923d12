"""Settings of the sampler service (env prefix GEOLOC_SAMPLER_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geoloc.common.settings import BundleSettings, ServerSettings
from geoloc.sampler.model import SHIPPED_SAMPLERS


class SamplerSettings(ServerSettings, BundleSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_SAMPLER_")
    BUNDLE_REPLACES = ("flow_checkpoint", "sh_checkpoint")

    flow_checkpoint: Path | None = Field(
        SHIPPED_SAMPLERS / "flow.pt", description="The flow-matching checkpoint; 'none' serves without that method."
    )
    sh_checkpoint: Path | None = Field(
        SHIPPED_SAMPLERS / "sh.pt", description="The SH-diffusion checkpoint; 'none' serves without that method."
    )
    default_method: Literal["flow", "sh"] = Field("flow", description="The method used when a request leaves it unset.")
    default_samples: int = Field(256, ge=2, description="Samples drawn when a request asks for 0.")
    max_samples: int = Field(4096, ge=2, description="The most samples one request may ask for.")
    default_steps: int = Field(32, ge=1, description="Integration or denoising steps when a request asks for 0.")
    max_steps: int = Field(1000, ge=1, description="The most steps one request may ask for.")
    max_sample_steps: int = Field(
        262_144, ge=2, description="Bound on n_samples x steps of one request, so that no call pins a worker for long."
    )
    max_guidance: float = Field(20.0, ge=0, description="The largest classifier-free guidance accepted.")
    max_batch: int = Field(
        16, ge=1, description="The most concurrent requests (same method, samples, steps, guidance) run as one batch."
    )
    use_gpu: bool = Field(False, description="Run the networks on CUDA when it is available.")

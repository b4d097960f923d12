"""Settings of the orchestrator, from GEOLOC_ORCHESTRATOR_* environment variables.

The experts' addresses default to the ports `geoloc up` gives them on loopback; in Kubernetes
they are the Services' names (k8s/base/config/orchestrator.env). An address of 'none' marks an
expert as not deployed: it is reported as SKIPPED and the answer comes from the others.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geoloc.common.paths import MODELS_DIR
from geoloc.common.settings import MIB, BundleSettings, ClientTlsSettings, ServerSettings
from geoloc.common.texts import MAX_TEXT_CHARS

SHIPPED_FUSION = MODELS_DIR / "fusion" / "fusion.json"


# ClientTlsSettings: the CLIENT_TLS_* settings of the calls to the embedding service and the experts.
class OrchestratorSettings(ServerSettings, ClientTlsSettings, BundleSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_ORCHESTRATOR_")
    BUNDLE_REPLACES = ("fusion_parameters",)

    embedding_address: str = Field("127.0.0.1:50052", description="The embedding service (host:port).")
    gallery_address: str | None = Field("127.0.0.1:50053", description="The gallery expert; 'none': not deployed.")
    sampler_address: str | None = Field(
        "127.0.0.1:50054", description="The sampler expert (flow and SH); 'none': not deployed."
    )
    tokens_address: str | None = Field("127.0.0.1:50055", description="The tokens expert; 'none': not deployed.")
    text_address: str | None = Field("127.0.0.1:50056", description="The text expert; 'none': not deployed.")
    max_in_flight: int | None = Field(
        1,
        gt=0,
        description="Locate calls admitted at once; beyond it a call is refused at once with RESOURCE_EXHAUSTED and "
        "a RetryInfo delay. 1 is measured with the whole suite on 2 cores (docs/performance.md): 2 already left "
        "experts past their timeouts. Raise it where the experts have cores of their own. 'none': no limit.",
    )
    default_deadline_s: float = Field(
        10.0, gt=0, description="The whole call's budget when the caller sets no deadline."
    )
    deadline_margin_s: float = Field(
        0.5,
        ge=0,
        description="Kept back from the caller's remaining time for fusion (about 30 ms on 2 cores), place names "
        "and the reply.",
    )
    embed_timeout_s: float = Field(5.0, gt=0, description="The most the embedding call may take.")
    gallery_timeout_s: float = Field(2.0, gt=0, description="The most the gallery expert's call may take.")
    sampler_timeout_s: float = Field(5.0, gt=0, description="The most each sampler method's call may take.")
    tokens_timeout_s: float = Field(2.0, gt=0, description="The most the tokens expert's call may take.")
    text_timeout_s: float = Field(
        3.0, gt=0, description="The most the text expert's call may take (it starts with the embedding call)."
    )
    ask_unweighted_experts: bool = Field(
        False,
        description="Ask every deployed expert by default, also those the fitted fusion gives weight 0 "
        "(their answers cannot change the fused one; callers may still name them in options.experts).",
    )
    gallery_k: int = Field(32, ge=1, le=1000, description="Gallery points asked for.")
    # Each sampler method's own: what it is asked changes its answers, and so what the fusion was fitted on.
    flow_samples: int = Field(128, ge=2, description="Samples asked of the flow sampler.")
    flow_steps: int = Field(16, ge=1, description="Integration steps asked of the flow sampler.")
    sh_samples: int = Field(128, ge=2, description="Samples asked of the SH diffusion sampler.")
    sh_steps: int = Field(16, ge=1, description="Denoising steps asked of the SH diffusion sampler.")
    tokens_beam_width: int = Field(5, ge=1, description="Beam width asked of the tokens expert.")
    fusion_parameters: Path = Field(SHIPPED_FUSION, description="The fitted fusion parameters (geoloc train fusion).")
    max_image_bytes: int = Field(16 * MIB, gt=0, description="Largest encoded photo accepted.")
    max_query_chars: int = Field(MAX_TEXT_CHARS, gt=0, description="Longest LocateText query accepted, in characters.")
    max_batch_images: int = Field(16, ge=1, description="Most photos in one LocateBatch call.")

"""Settings of the embedding service (env prefix GEOLOC_EMBEDDING_)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from geoloc.common.photos import PhotoLimits
from geoloc.common.settings import MIB, BundleSettings, ClientTlsSettings, ServerSettings
from geoloc.common.texts import MAX_TEXT_CHARS


# ClientTlsSettings: the CLIENT_TLS_* settings of the calls to Triton (its --grpc-use-ssl flags).
class EmbeddingSettings(ServerSettings, ClientTlsSettings, BundleSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_EMBEDDING_")
    BUNDLE_REPLACES = ("model_name", "text_model_name")

    triton_url: str = Field("127.0.0.1:8001", description="Triton's gRPC address (host:port).")
    model_name: str = Field("efficientnet_lite2", description="The backbone: a model of the Triton repository.")
    model_version: str = Field("", description="Model version to call; empty: the latest Triton serves.")
    text_model_name: str = Field(
        "",
        description="The backbone's text tower, a model of the Triton repository (clip_vit_l14_text for "
        "clip_vit_l14); empty: none, and EmbedText answers FAILED_PRECONDITION.",
    )
    max_text_chars: int = Field(MAX_TEXT_CHARS, gt=0, description="Longest text EmbedText accepts, in characters.")
    triton_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for one Triton inference; a shorter caller deadline wins."
    )
    triton_ready_timeout_s: float = Field(
        300.0, gt=0, description="At start-up, how long to wait for the model to be READY before exiting."
    )
    max_image_bytes: int = Field(16 * MIB, gt=0, description="Largest encoded photo accepted.")
    max_image_pixels: int = Field(
        64_000_000, gt=0, description="Largest width x height accepted, checked before decoding (decompression bombs)."
    )
    min_image_side: int = Field(32, gt=0, description="Smallest width or height accepted, in pixels.")
    max_batch_images: int = Field(64, gt=0, description="Most photos in one EmbedBatch call.")

    def photo_limits(self) -> PhotoLimits:
        """The limits every photo is checked against, in the service and in the training pipeline alike."""
        return PhotoLimits(self.max_image_bytes, self.max_image_pixels, self.min_image_side)

    @model_validator(mode="after")
    def _photo_fits_in_a_message(self) -> EmbeddingSettings:
        if self.max_image_bytes >= self.max_receive_message_bytes:
            raise ValueError("max_image_bytes must be below max_receive_message_bytes, or the limit could never answer")
        return self

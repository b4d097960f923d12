"""Settings of the gallery service (env prefix GEOLOC_GALLERY_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geoloc.common.settings import BundleSettings, ServerSettings
from geoloc.gallery.build import DEFAULT_GALLERY_DIR
from geoloc.gallery.heads import SHIPPED_HEAD


class GallerySettings(ServerSettings, BundleSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_GALLERY_")
    BUNDLE_REPLACES = ("head",)

    gallery_dir: Path = Field(DEFAULT_GALLERY_DIR, description="The built GPS gallery (geoloc gallery build).")
    build_if_missing: bool = Field(
        True, description="At start-up, build the default 100K gallery into GALLERY_DIR if it is not there."
    )
    head: str = Field(
        str(SHIPPED_HEAD),
        description="The image head checkpoint, or 'clip' for GeoCLIP's released head (CLIP ViT-L/14 features).",
    )
    use_gpu: bool = Field(False, description="Search on the GPU with faiss-gpu when one is present.")
    nprobe: int = Field(
        32, ge=1, description="For galleries beyond 1M points (IVF-SQ8): inverted lists scanned per query."
    )

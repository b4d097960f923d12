"""Where a checkout keeps things: the one place that knows the repository's layout.

Every default path of the suite is derived from CHECKOUT (this file is
services/geoloc/common/paths.py). A deployment overrides them through each service's settings;
the data root, the cache and the Triton model repository through GEOLOC_DATA_DIR,
GEOLOC_CACHE_DIR and GEOLOC_MODEL_REPOSITORY.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]
MODELS_DIR = CHECKOUT / "models"  # shipped checkpoints and their manifests
MODEL_REPOSITORY_ENV = "GEOLOC_MODEL_REPOSITORY"
# Triton's models: this checkout's, or a team's own (their backbone's weights beside its config).
MODEL_REPOSITORY = Path(os.environ.get(MODEL_REPOSITORY_ENV) or CHECKOUT / "model_repository")
ARTIFACTS_DIR = CHECKOUT / "artifacts"  # built, not shipped: the GPS galleries
RUN_DIR = CHECKOUT / ".run"  # `geoloc up`'s state and logs
DATA_DIR_ENV = "GEOLOC_DATA_DIR"
CACHE_DIR_ENV = "GEOLOC_CACHE_DIR"


def data_root() -> Path:
    """Where the geotagged photo sets live: $GEOLOC_DATA_DIR, else the `shared/data` beside this checkout."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else CHECKOUT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Where computed features and expert answers are cached: $GEOLOC_CACHE_DIR, else `.cache/` in the checkout."""
    return Path(os.environ.get(CACHE_DIR_ENV, CHECKOUT / ".cache"))

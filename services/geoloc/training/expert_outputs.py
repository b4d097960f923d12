"""Every expert's answer for every photo of a split, computed in-process as the services compute them.

Fitting the fusion needs each expert's weighted points on the 360 val photos, and training the
token decoder needs the gallery's points as neighbours; asking the live services would give the
same points (the services call these same functions) but needs the suite running. The answers
are cached per split and per model version under the cache dir.

`outputs_of` answers for any `ExpertModels` held in memory; `compute_expert_outputs` is it on the
shipped models, and the out-of-fold answers (geoloc.training.out_of_fold) are it on models
trained without the photos asked about.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoloc import experts as registry
from geoloc.artifacts.files import written_atomically
from geoloc.experts import TRAINED_EXPERTS
from geoloc.orchestrator.config import OrchestratorSettings
from geoloc.orchestrator.fusion import ExpertPoints
from geoloc.tokens.decoder import Neighbours

if TYPE_CHECKING:  # the models' modules load faiss and the networks: imported where they are used
    from geoloc.gallery.index import GalleryIndex


# Raised when an answer function changes what it answers for the same model, request and seed, so
# that no cache (cached_expert_outputs, out_of_fold's) serves answers of the old rule. 2: each
# photo's sampler noise is drawn from its own seed, as the sampler service draws it.
ANSWER_RULE = 2


def _orchestrator_default(name: str):
    return OrchestratorSettings.model_fields[name].default


class _Asked:
    """What ExpertRequests does beyond holding the settings."""

    @classmethod
    def of(cls, settings: OrchestratorSettings):
        """What an orchestrator with these settings asks."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def of_expert(self, expert: str) -> dict[str, int]:
        """What is asked of this one expert: the settings its answers depend on (its registry entry's)."""
        return {name: getattr(self, name) for name in registry.expert(expert).asked}


# What the orchestrator asks of each trained expert: one field per setting its registry entry's
# `asked` names (gallery_k, flow_samples, ..., tokens_beam_width, in the registry's order),
# defaulting to the orchestrator's default, so that a new expert's settings join by themselves.
ExpertRequests = make_dataclass(
    "ExpertRequests",
    [
        (name, OrchestratorSettings.model_fields[name].annotation, field(default=_orchestrator_default(name)))
        for expert in TRAINED_EXPERTS
        for name in registry.expert(expert).asked
    ],
    bases=(_Asked,),
    frozen=True,
)
ExpertRequests.__module__ = __name__  # where pickling and reprs of the class find it


@dataclass(frozen=True)
class ExpertModels:
    """The trained experts as the services hold them in memory, by name: the shipped ones
    (`shipped`) or any trained in-process (geoloc.training.out_of_fold), answered by the same
    `outputs_of`."""

    models: Mapping[str, Any]
    # Per expert, what its training kept (best epoch or step, seconds), for models trained in-process.
    kept: dict[str, dict] = field(default_factory=dict)

    def __getitem__(self, expert: str):
        return self.models[expert]

    @classmethod
    def shipped(cls, gallery: GalleryIndex | None = None) -> ExpertModels:
        """The shipped checkpoints, each loaded by its fold trainer as its service holds it; a model
        that reads the GPS gallery over `gallery` (default: the default 100K gallery, built first
        if missing)."""
        trainers = {name: registry.expert(name).trainer() for name in TRAINED_EXPERTS}
        if gallery is None and any(t.needs_gallery for t in trainers.values()):
            from geoloc.gallery.retrieval import loaded_gallery

            gallery = loaded_gallery()
        paths = shipped_checkpoints()
        return cls({name: trainer.served(paths[name], gallery) for name, trainer in trainers.items()})


def checkpoints_in(models: Path, model: str) -> dict[str, Path]:
    """Where each trained expert's checkpoint lives in a models folder: the layout of the checkout's
    models/, which the services load by default and `geoloc bundle build --models` reads (each
    expert's registry entry; a gallery head is named for the Triton model whose features it takes)."""
    return {name: Path(models) / registry.expert(name).models_file.format(model=model) for name in TRAINED_EXPERTS}


def fusion_in(models: Path) -> Path:
    """Where the fusion parameters live in a models folder."""
    return Path(models) / "fusion" / "fusion.json"


def shipped_checkpoints() -> dict[str, Path]:
    """Where each shipped expert's checkpoint lives, as the services load it."""
    from geoloc.common.paths import MODELS_DIR
    from geoloc.embedding.model_config import DEFAULT_MODELS

    return checkpoints_in(MODELS_DIR, DEFAULT_MODELS[0])


def outputs_of(
    models: ExpertModels, features: np.ndarray, requests: ExpertRequests, seed: int = 0
) -> dict[str, np.ndarray]:
    """{expert: [n, points, 4] (lat, lon, weight, radius_km)} for backbone features [n, d]: each
    expert's expert_answers."""
    return {e: expert_answers(e, models[e], features, requests, seed) for e in models.models}


def expert_answers(expert: str, model, features: np.ndarray, requests: ExpertRequests, seed: int = 0) -> np.ndarray:
    """[n, points, 4] (lat, lon, weight, radius_km): what `model` (the expert's, as its service holds
    it) answers for backbone features [n, d] asked with `seed`, through the expert's own answer
    function (its registry entry's `answer`, which its service calls too): points gallery_k,
    flow_samples or sh_samples (each weighing 1/samples) and tokens_beam_width (zero-weight padding
    where the beam holds fewer distinct cells). Each photo's answer is the one it gets alone."""
    entry = registry.expert(expert)
    if not entry.trained:
        raise ValueError(f"the {expert} expert is not answered from backbone features")
    return entry.answer_function()(model, features, requests.of_expert(expert), seed)


def compute_expert_outputs(features: np.ndarray, requests: ExpertRequests, seed: int = 0) -> dict[str, np.ndarray]:
    """{expert: [n, points, 4] (lat, lon, weight, radius_km)} of the shipped experts, for backbone features [n, d]."""
    return outputs_of(ExpertModels.shipped(), features, requests, seed)


def models_fingerprint(checkpoints: dict[str, Path] | None = None) -> str:
    """A short hash of the expert checkpoints (default: the shipped ones): cached outputs are only
    reused for the same models, and a fusion records the experts it was fitted for. The sha256 of
    their bytes one after the other, each file streamed once (artifacts.files.files_sha256)."""
    from geoloc.artifacts.files import files_sha256

    return files_sha256((checkpoints or shipped_checkpoints()).values())[:12]


def cached_expert_outputs(
    features: np.ndarray, requests: ExpertRequests, cache_dir: Path, split: str
) -> dict[str, np.ndarray]:
    described = repr(requests) + models_fingerprint() + f"answer rule {ANSWER_RULE}"
    key = hashlib.sha256(features.tobytes() + described.encode()).hexdigest()[:16]
    path = cache_dir / "fusion" / f"{split}-experts-{key}.npz"
    if path.exists():
        with np.load(path) as saved:
            return dict(saved)
    outputs = compute_expert_outputs(features, requests)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as stream:  # a killed run leaves no half cache for the next to read
        np.savez_compressed(stream, **outputs)
    return outputs


def photo_answers(outputs: dict[str, np.ndarray], row: int, experts=None) -> list[ExpertPoints]:
    """The experts' answers for one photo, as the orchestrator would hold them."""
    chosen = outputs if experts is None else {e: outputs[e] for e in experts}
    return [ExpertPoints(e, a[row, :, 0], a[row, :, 1], a[row, :, 2], a[row, :, 3]) for e, a in chosen.items()]


def gallery_neighbours(
    features: np.ndarray, count: int, head_path: Path | None = None, gallery_dir: Path | None = None
) -> Neighbours:
    """The gallery expert's `count` most probable points for each feature row [n, d], as the token
    decoder's neighbours. Defaults: the shipped gallery head and the default 100K gallery, built first
    if missing."""
    from geoloc.gallery.build import DEFAULT_GALLERY_DIR
    from geoloc.gallery.heads import SHIPPED_HEAD
    from geoloc.gallery.retrieval import GalleryRetrieval
    from geoloc.tokens.neighbours import neighbour_sets

    retrieval = GalleryRetrieval.load(head_path or SHIPPED_HEAD, gallery_dir or DEFAULT_GALLERY_DIR)
    places = retrieval.top_places(features, count)
    return neighbour_sets(places.lat_deg, places.lon_deg, places.probability, count)

"""The shipped experts, retrained on every photo by the procedure that cross-validation measured.

`geoloc cv --ship` ends here. Each fold's experts were trained by train_fold_experts (the shipped
configurations at the fold budget, each stopping on an inner photographer-grouped hold-out) on the
other folds; the shipped ones are trained the same way on all the photos, train and val together,
and written where the services load them. Each manifest carries the CV figures of its expert's own
answer: they describe this procedure on photographers it had not seen, which is what the shipped
model is an instance of. (Its configuration is recorded as trained, so the next cross-validation
trains its folds in the same one and finds its cached answers.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from geoloc import experts as registry
from geoloc.gallery.index import GalleryIndex
from geoloc.gallery.location_encoder import LocationEncoder
from geoloc.training.expert_outputs import shipped_checkpoints
from geoloc.training.manifest import model_manifest, write_manifest
from geoloc.training.out_of_fold import FoldBudget, fold_configs, train_fold_experts

NOTE = (
    "demo-grade: 1902 Im2GPS3k photos by 119 photographers; EfficientNet ImageNet features cap accuracy near the"
    " prior (docs/design.md §5). Its figures are cross-validated (cv_top1), not measured on photos it was trained on"
)


def ship_experts(
    features: np.ndarray,
    coords: np.ndarray,
    authors: Sequence[str],
    budget: FoldBudget,
    cv: dict,
    command: str,
    gallery: GalleryIndex,
    encoder: LocationEncoder,
    seed: int = 0,
    paths: dict[str, Path] | None = None,
    log: Callable[[str], None] = print,
    configs: Mapping[str, Mapping] | None = None,
) -> dict[str, Path]:
    """Trains every trained expert on all these photos as train_fold_experts trains a fold's (in the
    configurations `configs` changes, as cross-validation compared them), writes each checkpoint to
    `paths` (default: where the services load them) with its manifest (its fold trainer saves it
    and says what its manifest adds), and returns the manifests' paths. `cv` is the CV figures
    (geoloc cv's JSON): each manifest records its expert's row and the constant's."""
    paths = paths or shipped_checkpoints()
    started = time.monotonic()
    log(f"training the shipped experts on all {len(features)} photos")
    trained_in = fold_configs(budget, configs)
    models = train_fold_experts(features, coords, authors, budget, gallery, encoder, seed, log, trained_in)
    trainers = {expert: registry.expert(expert).trainer() for expert in paths}
    shas = {expert: trainer.save(paths[expert], models[expert]) for expert, trainer in trainers.items()}
    photographers = len({a for a in authors if a})
    written = {}
    for expert, path in paths.items():
        kept = models.kept[expert]
        chosen, extra = trainers[expert].manifest_fields(trained_in[expert], models[expert], gallery)
        manifest = model_manifest(
            expert,
            path,
            shas[expert],
            {
                "train": f"Im2GPS3k train + val ({len(features)} photos, {photographers} photographers)",
                "fit": f"{kept['fit_photos']} of them; stopped on the other {kept['stopping_photos']}, held out by "
                "photographer",
            },
            started,
            **extra,
            command=command,
            chosen={**chosen, **{k: v for k, v in kept.items() if k.startswith("best_")}},
            fold_budget=asdict(budget),
            cv_protocol=f"{cv['what']}: per fold, this procedure trained on the other folds answered the fold's "
            "photos; the figure is of its own top point, mean and spread over folds",
            cv_top1=cv["chosen"]["summary"]["answers"][expert],
            cv_constant=cv["chosen"]["summary"]["answers"]["constant"],
            note=NOTE,
        )
        manifest["train_seconds"] = kept["seconds"]
        written[expert] = write_manifest(path, manifest)
        log(f"  {expert}: {path} (sha256 {shas[expert][:12]})")
    log(f"shipped experts written ({time.monotonic() - started:.0f} s)")
    return written

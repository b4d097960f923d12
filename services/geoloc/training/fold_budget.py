"""What every expert's fold training shares: the budget, one fold's photos as trainers read them,
and the contract each trained expert's fold trainer keeps (its registry entry's `fold_trainer`).

Loads no numpy or torch, so that `geoloc cv --help` can read the budget's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class FoldBudget:
    """How long each fold's experts train, and how they weight its photos. Everything else is the
    shipped configuration, or one compared under CV (out_of_fold.fold_configs' `configs`)."""

    gallery_epochs: int = 3  # the shipped head's best epoch was 2
    flow_steps: int = 1500
    sh_steps: int = 750
    tokens_steps: int = 400
    evaluations: int = 5  # early-stopping evaluations per sampler and decoder run, evenly spaced
    eval_samples: int = 16  # samples per inner hold-out photo in the samplers' evaluations
    eval_steps: int = 8  # integration steps of those samples
    # Each training photo's weight in the experts' losses and stopping scores (evaluation/folds.WEIGHTINGS).
    # One vote per photo: cap10 lowered the fused CV GeoScore from 1101 to 1033 (docs/evaluation.md).
    photo_weighting: str = "photo"

    def every(self, steps: int) -> int:
        """The steps between early-stopping evaluations of a run of `steps`."""
        return max(steps // self.evaluations, 1)


# FoldBudget's whole-number fields: what `geoloc cv --budget FIELD=N` may change.
BUDGET_FIELDS = tuple(f.name for f in fields(FoldBudget) if f.type == "int")
# The fields of an expert's training configuration that the budget sets for every expert alike: a
# configuration compared under CV may not change them (a change belongs in FoldBudget).
SET_BY_BUDGET = ("epochs", "steps", "eval_every", "eval_samples", "eval_steps", "eval_guidance")


@dataclass(frozen=True)
class FoldPhotos:
    """One fold's training photos as its trainers read them: those it fits, those of the inner
    photographer-grouped hold-out it stops on, and each photo's weight in both (empty: one vote
    per photo, the unweighted loops)."""

    fit_features: Any  # [n, d] float32
    fit_coords: Any  # [n, 2] lat, lon
    stop_features: Any
    stop_coords: Any
    weights: dict  # {"train_weight": [n], "val_weight": [m]}, or {}
    backbone: str  # recorded in the models trained
    version: str

    @property
    def arrays(self) -> tuple:
        return self.fit_features, self.fit_coords, self.stop_features, self.stop_coords


def config_of(config_type: type, chosen: dict):
    """`config_type` with the fields a manifest's `chosen` names (it also holds outcomes, such as best_step)."""
    return config_type(**{f.name: chosen[f.name] for f in fields(config_type) if f.name in chosen})


@dataclass(frozen=True)
class FoldTrainer:
    """How one trained expert is trained on a fold, saved as it ships, and loaded as served; each
    trained expert's registry entry names its subclass (`fold_trainer`), built with its name.
    `gallery` (a flat GalleryIndex) and `encoder` (the location encoder) are passed to every method
    that takes them; an expert that does not say `needs_gallery` ignores them. The defaults here
    are those of an expert that reads the backbone feature alone."""

    name: str
    needs_gallery: bool = False  # its training or its answers read the GPS gallery

    def shipped_config(self, chosen: dict, budget: FoldBudget) -> Any:
        """Its training configuration: its shipped manifest's `chosen`, at the budget."""
        raise NotImplementedError

    def check(self, config) -> None:
        """Raises ValueError for a configuration whose answers out-of-fold training cannot give."""

    def train(self, config, photos: FoldPhotos, gallery, encoder, seed: int, log) -> tuple[Any, dict, str]:
        """(the model as its service holds it, what training kept such as its best step, one line
        saying so)."""
        raise NotImplementedError

    def save(self, path, model) -> str:
        """Writes its checkpoint; returns its sha256."""
        raise NotImplementedError

    def manifest_fields(self, config, model, gallery) -> tuple[dict, dict]:
        """(its manifest's `chosen`, the fields its manifest adds)."""
        raise NotImplementedError

    def served(self, path, gallery) -> Any:
        """The model of this checkpoint (loaded by its registry entry's `loader`), as its service
        holds it."""
        from geoloc.experts import expert

        return expert(self.name).load(path)

    def cache_described(self, gallery) -> list:
        """What its out-of-fold answers depend on beyond its configuration and what it is asked."""
        return []

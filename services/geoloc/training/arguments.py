"""The options and the data every `geoloc train` job shares: the Im2GPS3k splits and their features."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and torch load in the handlers only, so that `geoloc --help` stays quick
    import numpy as np

    from geoloc.training.loop import BatchShards


# What `geoloc train` embeds with unless a features folder names another model.
DEFAULT_MODEL = "efficientnet_lite2"
DEFAULT_BACKBONE = "efficientnet-lite2"

DATA_HELP = (
    "data root holding im2gps3k/train and im2gps3k/val, each with images/ and labels.csv "
    "(default: $GEOLOC_DATA_DIR, else ../shared/data beside the checkout)"
)


def add_data_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The options every `geoloc train` job shares: where the photos are and where the result goes."""
    parser.add_argument("--data", type=Path, metavar="DIR", help=DATA_HELP)
    metavar = "PATH" + Path(default_out).suffix
    parser.add_argument("--out", type=Path, metavar=metavar, help=f"(default: {default_out} in the checkout)")


def add_training_arguments(parser: argparse.ArgumentParser, default_out: str, on_features: bool = True) -> None:
    """The data options, the feature set and the seed; for experts trained by steps (on_features),
    also the steps and the device."""
    add_data_arguments(parser, default_out)
    parser.add_argument(
        "--features",
        type=Path,
        metavar="FILE.npz|DIR",
        help="train on these features and places instead of the train split's: an .npz with `features` "
        "and `latlon`, or a folder of feature shards from `geoloc features` (its backbone then also "
        "embeds the val split, in-process, and names the trained model's input)",
    )
    if on_features:
        parser.add_argument("--steps", type=int, help="optimiser steps per configuration (default: the grid's)")
        parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class TrainingData:
    train: object  # geoloc.evaluation.dataset.Split: the Im2GPS3k train split (the prior baseline's source)
    val: object
    train_features: np.ndarray  # [n, d] float32, or a float16 memory map (a features folder's)
    train_places: np.ndarray  # [n, 2] lat, lon
    val_features: np.ndarray
    val_places: np.ndarray
    train_source: str  # what the features are, for logs and manifests
    backbone: str = DEFAULT_BACKBONE  # whose features: a served model refuses another backbone's

    @property
    def backbone_description(self) -> str:
        """The backbone as a model's manifest names it."""
        from geoloc.training.manifest import BACKBONE

        return BACKBONE if self.backbone == DEFAULT_BACKBONE else f"{self.backbone} (features: {self.train_source})"

    def sources(self) -> dict[str, str]:
        """What was trained on and chosen on, as a manifest's `data`."""
        return {"train": self.train_source, "val": f"{self.val.root} ({len(self.val)} photos)"}


def training_data(args: argparse.Namespace) -> TrainingData:
    """The train split's cached features (or --features) and the val split's, with their places."""
    import numpy as np

    from geoloc.evaluation.csvio import InputError
    from geoloc.evaluation.dataset import im2gps3k_split
    from geoloc.training.features import split_features

    train, val = im2gps3k_split("train", args.data), im2gps3k_split("val", args.data)
    model, backbone = DEFAULT_MODEL, DEFAULT_BACKBONE
    if args.features and args.features.is_dir():
        from geoloc.common.paths import cache_dir
        from geoloc.training.feature_shards import load_feature_set, model_sha256

        # Memory-mapped: the trainers read it by minibatch (training/mapped_features.py).
        loaded = load_feature_set(args.features, mapped_in=cache_dir() / "mapped-features")
        model, backbone = loaded.manifest["model"], loaded.backbone
        if loaded.manifest["model_sha256"] != model_sha256(model):
            raise InputError(
                f"{args.features} was made by another {model} than model_repository/{model} "
                "(its model_sha256 differs): val would be embedded by a different network"
            )
        train_features, train_places = loaded.features, loaded.places
        train_source = f"{args.features} ({len(train_features)} features of {backbone})"
    elif args.features:
        loaded = np.load(args.features)
        train_features, train_places = loaded["features"].astype(np.float32), loaded["latlon"].astype(np.float64)
        train_source = f"{args.features} ({len(train_features)} features)"
    else:
        train_features, train_places = split_features(train), np.array([(i.lat, i.lon) for i in train.images])
        train_source = f"{train.root} ({len(train)} photos)"
    return TrainingData(
        train,
        val,
        train_features,
        train_places,
        split_features(val, model),
        np.array([(i.lat, i.lon) for i in val.images]),
        train_source,
        backbone,
    )


@contextmanager
def data_parallel(args: argparse.Namespace) -> Iterator[tuple[BatchShards | None, dict | None]]:
    """Under torchrun (WORLD_SIZE above 1): this process joins the group (NCCL when --device is
    cuda, its rank's GPU then; gloo on CPU) and computes its rank's shard of every minibatch. Yields
    the shards and what a manifest records of them, or (None, None) for one plain process."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield None, None
        return
    import torch.distributed as dist

    from geoloc.training.loop import BatchShards

    cuda = str(getattr(args, "device", "cpu")).startswith("cuda")
    if cuda:
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        shards = BatchShards.of_process_group(args.seed)
        yield shards, {"processes": world, "backend": dist.get_backend(), "shards_per_step": shards.count}
    finally:
        dist.destroy_process_group()


def lead_print(shards: BatchShards | None) -> Callable[..., None]:
    """print for the process that reports (the first rank, or the only process); silence for the rest."""
    return print if shards is None or shards.leads else (lambda *_, **__: None)

"""Score a labelled split against a prediction source."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from geoloc.evaluation.csvio import InputError
from geoloc.evaluation.dataset import LabelledImage, Split
from geoloc.evaluation.metrics import THRESHOLDS_KM, summarize
from geoloc.evaluation.predictions import Prediction, PredictionSource
from geoloc.evaluation.report import Report
from geoloc.geo.sphere import haversine_km

MISSING_NAMES_SHOWN = 5


def evaluate(
    split: Split,
    source: PredictionSource,
    *,
    allow_missing: bool = False,
    by_expert: bool = False,
    thresholds_km: Sequence[float] = THRESHOLDS_KM,
    progress: bool = True,
) -> Report:
    """Match predictions to labels by image name and summarise the errors.

    Raises InputError when labelled images lack a prediction (unless allow_missing),
    when a source predicts the same image twice, or when nothing is left to score.
    """
    labelled = {record.image: record for record in split.images}
    found: dict[str, Prediction] = {}
    n_unknown = 0
    stream = source.predict(split.images)
    # stderr, so that stdout carries only the table and can be redirected cleanly.
    bar = tqdm(stream, total=len(split), desc=f"eval {split.name}", unit="img", file=sys.stderr, disable=not progress)
    for prediction in bar:
        if prediction.image not in labelled:
            n_unknown += 1
        elif prediction.image in found:
            raise InputError(f"{source.description}: more than one prediction for image {prediction.image!r}")
        else:
            found[prediction.image] = prediction

    missing = tuple(record.image for record in split.images if record.image not in found)
    if missing and not allow_missing:
        shown = ", ".join(missing[:MISSING_NAMES_SHOWN]) + (", ..." if len(missing) > MISSING_NAMES_SHOWN else "")
        raise InputError(
            f"{source.description}: no prediction for {len(missing)} of {len(split)} labelled images "
            f"in {split.root} (first: {shown}); pass --allow-missing (allow_missing=True) to score the rest"
        )
    scored = [record for record in split.images if record.image in found]
    if not scored:
        raise InputError(
            f"{source.description}: no prediction matches any of the {len(split)} labelled images in {split.root}"
        )

    overall = summarize(_distances(scored, [(found[r.image].lat, found[r.image].lon) for r in scored]), thresholds_km)

    experts = None
    if by_expert:
        # Sources that know their experts up front (the CSV header) list them, so an
        # expert that never answered still shows up, with n = 0, instead of vanishing.
        names = list(getattr(source, "experts", ()))
        for record in scored:
            names.extend(name for name in found[record.image].experts if name not in names)
        experts = {}
        for name in names:
            answered = [record for record in scored if name in found[record.image].experts]
            guesses = [found[record.image].experts[name] for record in answered]
            experts[name] = summarize(_distances(answered, guesses), thresholds_km) if answered else None

    return Report(
        dataset=str(split.root.resolve()),
        split=split.name,
        source=source.description,
        n=overall.n,
        missing=missing,
        n_unknown=n_unknown,
        thresholds_km=tuple(thresholds_km),
        metrics=overall,
        experts=experts,
    )


def _distances(records: Sequence[LabelledImage], guesses: Sequence[tuple[float, float]]) -> np.ndarray:
    truth = np.array([(r.lat, r.lon) for r in records], dtype=np.float64).reshape(-1, 2)
    guess = np.array(guesses, dtype=np.float64).reshape(-1, 2)
    return haversine_km(truth[:, 0], truth[:, 1], guess[:, 0], guess[:, 1])

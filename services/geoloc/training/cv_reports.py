"""What `geoloc cv` reports: each fold's figures, their mean and spread over the folds, the tables
it prints, how the weightings rank, and the fused answer with and without the text expert."""

from __future__ import annotations

import numpy as np

from geoloc.training.cross_validation import FUSED, FoldResult, fused_without

GUARDED = ("geoscore", "acc_200km", "acc_750km", "acc_2500km")  # where the fused must match the constant


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "spread": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def summarise_folds(results: list[FoldResult]) -> dict:
    """Per answer, each figure's mean and spread (sample standard deviation) over the folds that
    scored it (a group's rows over the folds that hold photos of the group), and the photos counted."""
    answers = dict.fromkeys(a for r in results for a in r.metrics)
    table = {}
    for answer in answers:
        rows = [r.metrics[answer] for r in results if answer in r.metrics]
        table[answer] = {
            "photos": sum(m.n for m in rows),
            "folds": len(rows),
            **{f"acc_{t:g}km": summary([m.accuracy_at(t) for m in rows]) for t in rows[0].thresholds_km},
            "geoscore": summary([m.geoscore for m in rows]),
            "median_km": summary([m.median_km for m in rows]),
        }
    coverage = {}
    for subset in dict.fromkeys(s for r in results for s in r.coverage):
        held = [r.coverage[subset] for r in results if subset in r.coverage]
        coverage[subset] = {
            "within_r50": summary([h[0] for h in held]),
            "within_r90": summary([h[1] for h in held]),
            "photos": sum(h[2] for h in held),  # where every expert of the subset said something
        }
    return {"answers": table, "coverage": coverage}


def fold_dict(result: FoldResult) -> dict:
    """One fold's figures, as the figures file holds them."""
    return {
        "fold": result.fold,
        "n": result.n,
        "metrics": {k: m.to_dict() for k, m in result.metrics.items()},
        "coverage": {k: {"within_r50": v[0], "within_r90": v[1], "photos": v[2]} for k, v in result.coverage.items()},
        "fitted": result.fitted,
    }


def fold_line(weighting: str, result: FoldResult, seconds: float) -> str:
    """The line printed as a fold is scored, `seconds` into the run."""
    return (
        f"  {weighting} fold {result.fold} ({result.n} photos): "
        f"fused GeoScore {result.metrics['fused'].geoscore:.0f} "
        f"(constant {result.metrics['constant'].geoscore:.0f}); chose {result.fitted} "
        f"({seconds:.0f} s)"
    )


def coverage_lines(coverage: dict) -> list[str]:
    """Per subset of experts, how often the calibrated radii held the true place."""
    return [
        f"  {subset}: r50 holds {c['within_r50']['mean']:.1%}, r90 holds {c['within_r90']['mean']:.1%}"
        for subset, c in coverage.items()
    ]


def standing(answers: dict) -> tuple[int, float]:
    """How a weighting ranks on CV: first by on how many GUARDED figures the fused answer's mean is
    at least the constant's, then by its mean GeoScore."""
    fused, constant = answers["fused"], answers["constant"]
    level = sum(fused[k]["mean"] >= constant[k]["mean"] for k in GUARDED)
    return level, fused["geoscore"]["mean"]


def markdown_table(answers: dict) -> str:
    lines = [
        "| answer | acc % ≤ 1 km | ≤ 25 km | ≤ 200 km | ≤ 750 km | ≤ 2500 km | GeoScore | median km |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in answers.items():
        acc = [figures[f"acc_{t}km"] for t in ("1", "25", "200", "750", "2500")]
        cells = [f"{100 * a['mean']:.1f} ± {100 * a['spread']:.1f}" for a in acc]
        cells += [f"{figures[k]['mean']:.0f} ± {figures[k]['spread']:.0f}" for k in ("geoscore", "median_km")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def add_on_comparison(answers: dict, groups: dict, expert: str) -> dict:
    """The fused answer with and without an add-on expert (the text expert; without it is the
    fusion of the others, which it is fitted beside: training/cross_validation.fit_answer), on all
    photos and on each group (`groups`: its own "with EXPERT" and "without EXPERT" among them); the
    add-on alone on the photos it answered; and whether with is at least without on every figure
    (the accuracies and GeoScore at least as high, the median error at most as far)."""
    without = fused_without(expert)
    rows = {
        f"{expert} (answered)": answers.get(f"{expert} (answered)"),
        "fused": answers["fused"],
        without: answers.get(without),
        "constant": answers["constant"],
    }
    for name in groups:
        for answer in (expert, FUSED, without, "constant"):
            rows[f"{answer} · {name}"] = answers.get(f"{answer} · {name}")
    rows = {k: v for k, v in rows.items() if v is not None}
    at_least = {
        scope: at_least_as_good(rows[f"{FUSED}{scope}"], rows[f"{without}{scope}"])
        for scope in ("", *(f" · {name}" for name in groups))
        if f"{FUSED}{scope}" in rows and f"{without}{scope}" in rows
    }
    answered = groups[f"with {expert}"]
    return {
        f"photos_with_{expert}": int(answered.sum()),
        f"share_with_{expert}": float(answered.mean()),
        "answers": rows,
        "with_at_least_without": at_least,
        "table": markdown_table(rows),
    }


def at_least_as_good(answer: dict, other: dict) -> dict[str, bool]:
    """Per figure of a CV summary: is `answer`'s mean at least as good as `other`'s?"""
    return {
        figure: answer[figure]["mean"] <= other[figure]["mean"]
        if figure == "median_km"
        else answer[figure]["mean"] >= other[figure]["mean"]
        for figure in answer
        if figure == "geoscore" or figure == "median_km" or figure.startswith("acc_")
    }

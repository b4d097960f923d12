"""The outcome of one evaluation run, as JSON for machines and as a table for people."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from geoloc.evaluation.metrics import Metrics

OVERALL_LABEL = "top-1"  # the answer the source gives; per-expert rows follow it


@dataclass(frozen=True)
class Report:
    dataset: str
    split: str
    source: str
    n: int  # images scored
    missing: tuple[str, ...]  # labelled images without a prediction, excluded from every figure
    n_unknown: int  # predictions for images the split does not label, ignored
    thresholds_km: tuple[float, ...]
    metrics: Metrics
    # None when per-expert scoring was not asked for; a None value means that expert never answered.
    experts: dict[str, Metrics | None] | None = None

    @property
    def n_missing(self) -> int:
        return len(self.missing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "source": self.source,
            "n": self.n,
            "n_missing": self.n_missing,
            "missing": list(self.missing),
            "n_unknown": self.n_unknown,
            "thresholds_km": list(self.thresholds_km),
            "metrics": self.metrics.to_dict(),
            "experts": None
            if self.experts is None
            else {
                name: (m.to_dict() if m is not None else _unanswered(self.thresholds_km))
                for name, m in self.experts.items()
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self) -> str:
        acc_heads = [f"<={t:g}km" for t in self.thresholds_km]
        heads = ["", "n", *acc_heads, "GeoScore", "median km", "mean km"]
        body = [self._row(OVERALL_LABEL, self.metrics)]
        for name, metrics in (self.experts or {}).items():
            body.append(self._row(name, metrics))
        widths = [max(len(str(cells[i])) for cells in [heads, *body]) for i in range(len(heads))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
            return "  ".join([first, *rest]).rstrip()

        lines = [
            f"dataset: {self.dataset} (split {self.split})",
            f"source:  {self.source}",
            f"scored:  {self.n} images; {self.n_missing} missing a prediction; "
            f"{self.n_unknown} prediction{'' if self.n_unknown == 1 else 's'} for unlabelled images ignored",
            "",
            line(heads),
            *(line(cells) for cells in body),
            "",
            "accuracy columns: % of images within that distance; GeoScore: mean of 5000*exp(-km/1492.7)",
        ]
        return "\n".join(lines)

    def _row(self, label: str, metrics: Metrics | None) -> list[str]:
        if metrics is None:
            return [label, "0", *(["-"] * (len(self.thresholds_km) + 3))]
        return [
            label,
            str(metrics.n),
            *(f"{100 * a:.1f}" for a in metrics.accuracy),
            f"{metrics.geoscore:.1f}",
            f"{metrics.median_km:.1f}",
            f"{metrics.mean_km:.1f}",
        ]


def _unanswered(thresholds_km: tuple[float, ...]) -> dict[str, Any]:
    # Same keys as a scored expert, so readers of the JSON need no special case for n = 0.
    return {
        "n": 0,
        "accuracy_within_km": {f"{t:g}": None for t in thresholds_km},
        "geoscore": None,
        "median_km": None,
        "mean_km": None,
    }

"""Tests for `geoloc eval`: hand-checked metrics, per-expert scoring, the CLI and its input errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from geoloc.cli import main
from geoloc.common.paths import data_root
from geoloc.evaluation.csvio import InputError
from geoloc.evaluation.dataset import LabelledImage, load_split
from geoloc.evaluation.harness import evaluate
from geoloc.evaluation.metrics import THRESHOLDS_KM, summarize
from geoloc.evaluation.predictions import CsvPredictions, Prediction, PredictionSource
from geoloc.geo.geoscore import GEOSCORE_SCALE_KM
from tests.photos import write_split

# On the equator a pure longitude offset is a great-circle arc: 1 degree = 6371·π/180 km.
KM_PER_DEGREE = 6371 * math.pi / 180  # = 111.19492664 km

# Five labelled images at (0, 0); the fused guess for image i sits DISTANCES_KM[i] east.
NAMES = ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")
DISTANCES_KM = (0.0, 10.0, 100.0, 1000.0, 3000.0)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header), *(",".join(str(cell) for cell in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def east_of_origin(km: float) -> float:
    return km / KM_PER_DEGREE


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    return write_split(tmp_path / "toy" / "val", [(name, 0, 0, "someone@N00") for name in NAMES])


@pytest.fixture
def predictions_csv(tmp_path: Path) -> Path:
    # gallery answers a, b, c at 0, 30, 300 km and abstains on d, e (empty cells);
    # text is a declared expert that never answers.
    gallery = {"a.jpg": 0.0, "b.jpg": 30.0, "c.jpg": 300.0}
    rows = []
    for name, km in zip(NAMES, DISTANCES_KM, strict=True):
        g = (0, east_of_origin(gallery[name])) if name in gallery else ("", "")
        rows.append((name, 0, east_of_origin(km), *g, "", ""))
    return write_csv(
        tmp_path / "preds.csv", ["image", "lat", "lon", "gallery_lat", "gallery_lon", "text_lat", "text_lon"], rows
    )


def check_fused_figures(m) -> None:
    # Distances 0, 10, 100, 1000, 3000 km (n = 5); "within" means <= the threshold.
    #   <=1 km:    {0}                 -> 1/5 = 0.2
    #   <=25 km:   {0, 10}             -> 2/5 = 0.4
    #   <=200 km:  {0, 10, 100}        -> 3/5 = 0.6
    #   <=750 km:  {0, 10, 100}        -> 3/5 = 0.6
    #   <=2500 km: {0, 10, 100, 1000}  -> 4/5 = 0.8
    # median = middle of the sorted five = 100 km
    # mean   = (0 + 10 + 100 + 1000 + 3000) / 5 = 4110 / 5 = 822 km
    # GeoScore = mean of 5000·exp(-d/1492.7) = 1000 · Σ exp(-d/1492.7):
    #   exp(0)             = 1
    #   exp(-10/1492.7)    = exp(-0.0066993) = 0.993323
    #   exp(-100/1492.7)   = exp(-0.0669927) = 0.935202
    #   exp(-1000/1492.7)  = exp(-0.669927)  = 0.511746
    #   exp(-3000/1492.7)  = exp(-2.009781)  = 0.134018
    #   sum = 3.574289  ->  GeoScore = 3574.289
    # Tolerance: each term above is rounded to 6 decimals, so the sum is good to
    # 5 × 0.5e-6 and the GeoScore to 1000 × 2.5e-6 = 0.0025.
    assert m.n == 5
    assert m.thresholds_km == (1, 25, 200, 750, 2500)
    expected_accuracy = (0.2, 0.4, 0.6, 0.6, 0.8)
    for threshold, expected in zip(THRESHOLDS_KM, expected_accuracy, strict=True):
        assert m.accuracy_at(threshold) == pytest.approx(expected, abs=1e-12)
    assert m.median_km == pytest.approx(100.0, abs=1e-9)
    assert m.mean_km == pytest.approx(822.0, abs=1e-9)
    assert m.geoscore == pytest.approx(3574.289, abs=0.0025)


def test_five_row_example_by_hand(split_dir: Path, predictions_csv: Path) -> None:
    report = evaluate(load_split(split_dir), CsvPredictions(predictions_csv), progress=False)
    assert report.n == 5 and report.n_missing == 0 and report.n_unknown == 0
    assert report.split == "val"
    assert report.experts is None
    check_fused_figures(report.metrics)

    table = report.format_table()
    # Percent with one decimal, GeoScore and distances in km with one decimal.
    assert "20.0" in table and "40.0" in table and "60.0" in table and "80.0" in table
    assert "3574.3" in table and "100.0" in table and "822.0" in table


def test_per_expert_scores_only_what_the_expert_answered(split_dir: Path, predictions_csv: Path) -> None:
    report = evaluate(load_split(split_dir), CsvPredictions(predictions_csv), by_expert=True, progress=False)
    check_fused_figures(report.metrics)  # expert columns must not change the fused figures
    assert report.experts is not None and list(report.experts) == ["gallery", "text"]

    gallery = report.experts["gallery"]
    # gallery answered 3 of the 5 images, at 0, 30 and 300 km:
    #   accuracy <=1, 25: {0} -> 1/3; <=200: {0, 30} -> 2/3; <=750, 2500: all -> 1
    #   median 30 km; mean (0 + 30 + 300) / 3 = 110 km
    #   GeoScore = 5000/3 · (1 + exp(-30/1492.7) + exp(-300/1492.7))
    #            = 5000/3 · (1 + 0.980103 + 0.817930) = 5000/3 · 2.798033 = 4663.388
    #   (terms rounded to 6 decimals: error <= 5000/3 × 1.5e-6 = 0.0025)
    assert gallery is not None and gallery.n == 3
    assert gallery.accuracy == pytest.approx((1 / 3, 1 / 3, 2 / 3, 1.0, 1.0), abs=1e-12)
    assert gallery.median_km == pytest.approx(30.0, abs=1e-9)
    assert gallery.mean_km == pytest.approx(110.0, abs=1e-9)
    assert gallery.geoscore == pytest.approx(4663.388, abs=0.0025)

    assert report.experts["text"] is None  # declared in the header, never answered
    data = report.to_dict()
    assert data["experts"]["text"] == {
        "n": 0,
        "accuracy_within_km": {"1": None, "25": None, "200": None, "750": None, "2500": None},
        "geoscore": None,
        "median_km": None,
        "mean_km": None,
    }
    table = report.format_table()
    assert "gallery" in table and "text" in table and "33.3" in table and "66.7" in table


def test_distance_equal_to_threshold_counts_as_within() -> None:
    m = summarize([1.0, 25.0, 200.0, 750.0, 2500.0])
    assert m.accuracy == pytest.approx((0.2, 0.4, 0.6, 0.8, 1.0))
    assert summarize([0.0]).geoscore == pytest.approx(5000.0)
    assert summarize([GEOSCORE_SCALE_KM]).geoscore == pytest.approx(5000.0 / math.e)


def test_summarize_rejects_empty_and_bad_distances() -> None:
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError):
        summarize([-1.0])


def test_allow_missing_excludes_and_reports_unknown_predictions(split_dir: Path, tmp_path: Path) -> None:
    rows = [("a.jpg", 0, 0), ("c.jpg", 0, east_of_origin(100.0)), ("stranger.jpg", 10, 10), ("other.jpg", 0, 0)]
    preds = write_csv(tmp_path / "partial.csv", ["image", "lat", "lon"], rows)
    with pytest.raises(InputError, match=r"no prediction for 3 of 5 labelled images .*b\.jpg, d\.jpg, e\.jpg"):
        evaluate(load_split(split_dir), CsvPredictions(preds), progress=False)

    report = evaluate(load_split(split_dir), CsvPredictions(preds), allow_missing=True, progress=False)
    assert report.n == 2 and report.missing == ("b.jpg", "d.jpg", "e.jpg") and report.n_unknown == 2
    # Only a (0 km) and c (100 km) are scored: median = mean = 50 km.
    assert report.metrics.median_km == pytest.approx(50.0, abs=1e-9)
    assert report.metrics.accuracy_at(25) == pytest.approx(0.5)


class ListSource:
    """An in-memory source of the shape a live orchestrator client will have."""

    description = "memory"

    def __init__(self, predictions: Sequence[Prediction]) -> None:
        self.predictions = predictions
        self.asked: list[str] = []

    def predict(self, records: Sequence[LabelledImage]) -> Iterator[Prediction]:
        self.asked = [r.image for r in records]
        yield from self.predictions


def test_any_prediction_source_plugs_in(split_dir: Path) -> None:
    source = ListSource(
        [
            Prediction(name, 0.0, east_of_origin(km), {"x": (0.0, 0.0)})
            for name, km in zip(NAMES, DISTANCES_KM, strict=True)
        ]
    )
    assert isinstance(source, PredictionSource)
    report = evaluate(load_split(split_dir), source, by_expert=True, progress=False)
    assert source.asked == list(NAMES)
    assert report.source == "memory"
    check_fused_figures(report.metrics)
    assert report.experts is not None and report.experts["x"] is not None and report.experts["x"].n == 5


def test_source_predicting_an_image_twice_is_an_error(split_dir: Path) -> None:
    source = ListSource([Prediction("a.jpg", 0, 0), Prediction("a.jpg", 1, 1)])
    with pytest.raises(InputError, match="more than one prediction for image 'a.jpg'"):
        evaluate(load_split(split_dir), source, allow_missing=True, progress=False)


def test_cli_end_to_end_writes_json_report(split_dir: Path, predictions_csv: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "out" / "nested" / "report.json"  # parents do not exist yet
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "geoloc.cli",
            "eval",
            "--data",
            str(split_dir),
            "--predictions",
            str(predictions_csv),
            "--report",
            str(report_path),
            "--by-expert",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "top-1" in result.stdout and "gallery" in result.stdout and "3574.3" in result.stdout

    data = json.loads(report_path.read_text(encoding="utf-8"))
    assert data["dataset"] == str(split_dir.resolve())
    assert data["split"] == "val"
    assert data["source"] == f"csv:{predictions_csv}"
    assert (data["n"], data["n_missing"], data["missing"], data["n_unknown"]) == (5, 0, [], 0)
    assert data["thresholds_km"] == [1, 25, 200, 750, 2500]
    fused = data["metrics"]
    assert fused["n"] == 5
    assert fused["accuracy_within_km"] == pytest.approx({"1": 0.2, "25": 0.4, "200": 0.6, "750": 0.6, "2500": 0.8})
    assert fused["geoscore"] == pytest.approx(3574.289, abs=0.0025)
    assert (fused["median_km"], fused["mean_km"]) == pytest.approx((100.0, 822.0))
    assert data["experts"]["gallery"]["n"] == 3
    assert data["experts"]["text"]["n"] == 0


def test_cli_in_process_allow_missing(split_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = write_csv(tmp_path / "p.csv", ["image", "lat", "lon"], [("a.jpg", 0, 0)])
    report_path = tmp_path / "r.json"
    code = main(
        ["eval", "--data", str(split_dir), "--predictions", str(preds), "--allow-missing", "--report", str(report_path)]
    )
    assert code == 0
    assert "1 images" in capsys.readouterr().out
    data = json.loads(report_path.read_text(encoding="utf-8"))
    assert data["n"] == 1 and data["n_missing"] == 4 and data["experts"] is None


def test_help_does_not_import_numpy() -> None:
    code = "import sys, geoloc.cli; geoloc.cli.build_parser(); print('numpy' in sys.modules, 'tqdm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False False"


LABEL_HEADER = ["image", "lat", "lon", "author"]
GOOD_LABELS = [(name, 0, 0, "x") for name in NAMES]
PRED_HEADER = ["image", "lat", "lon"]
GOOD_PREDS = [(name, 0, 0) for name in NAMES]


def labels_with(row_index: int, row: Sequence[object]) -> list[Sequence[object]]:
    rows = list(GOOD_LABELS)
    rows[row_index] = row
    return rows


def preds_with(row_index: int, row: Sequence[object]) -> list[Sequence[object]]:
    rows = list(GOOD_PREDS)
    rows[row_index] = row
    return rows


# (id, labels header, labels rows or None for no labels.csv, preds header, preds rows or None for no file,
#  extra CLI args, fragments the error message must contain)
BAD_INPUTS = [
    ("labels-file-absent", LABEL_HEADER, None, PRED_HEADER, GOOD_PREDS, [], ["labels.csv: no such file"]),
    (
        "labels-missing-column",
        ["image", "lat", "author"],
        [(n, 0, "x") for n in NAMES],
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["labels.csv", "missing column 'lon'"],
    ),
    (
        "labels-non-numeric",
        LABEL_HEADER,
        labels_with(1, ("b.jpg", "north", 0, "x")),
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["labels.csv", "row 2 (line 3)", "column 'lat'", "'north' is not a number"],
    ),
    (
        "labels-lat-range",
        LABEL_HEADER,
        labels_with(2, ("c.jpg", 90.5, 0, "x")),
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["labels.csv", "row 3 (line 4)", "column 'lat'", "90.5 is out of range [-90, 90]"],
    ),
    (
        "labels-lon-range",
        LABEL_HEADER,
        labels_with(4, ("e.jpg", 0, -180.01, "x")),
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["labels.csv", "row 5 (line 6)", "column 'lon'", "-180.01 is out of range [-180, 180]"],
    ),
    (
        "labels-nan",
        LABEL_HEADER,
        labels_with(0, ("a.jpg", "nan", 0, "x")),
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["row 1 (line 2)", "column 'lat'", "not a finite number"],
    ),
    (
        "labels-empty-cell",
        LABEL_HEADER,
        labels_with(0, ("a.jpg", 0, "", "x")),
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["row 1 (line 2)", "column 'lon'", "is empty"],
    ),
    (
        "labels-duplicate",
        LABEL_HEADER,
        labels_with(3, ("b.jpg", 0, 0, "x")),
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["labels.csv", "row 4 (line 5)", "column 'image'", "'b.jpg' already appears in row 2"],
    ),
    (
        "labels-short-row",
        LABEL_HEADER,
        labels_with(1, ("b.jpg", 0)),
        PRED_HEADER,
        GOOD_PREDS,
        [],
        ["labels.csv", "row 2 (line 3)", "has 2 fields, header has 4"],
    ),
    ("labels-no-rows", LABEL_HEADER, [], PRED_HEADER, GOOD_PREDS, [], ["labels.csv", "no data rows"]),
    ("preds-file-absent", LABEL_HEADER, GOOD_LABELS, PRED_HEADER, None, [], ["preds.csv: no such file"]),
    (
        "preds-missing-column",
        LABEL_HEADER,
        GOOD_LABELS,
        ["image", "lon"],
        [(n, 0) for n in NAMES],
        [],
        ["preds.csv", "missing column 'lat'"],
    ),
    (
        "preds-extra-field",
        LABEL_HEADER,
        GOOD_LABELS,
        PRED_HEADER,
        preds_with(2, ("c.jpg", 0, "12,5")),
        [],
        ["preds.csv", "row 3 (line 4)", "has 4 fields, header has 3"],
    ),
    (
        "preds-bad-lon",
        LABEL_HEADER,
        GOOD_LABELS,
        PRED_HEADER,
        preds_with(2, ("c.jpg", 0, "east")),
        [],
        ["preds.csv", "row 3 (line 4)", "column 'lon'", "'east' is not a number"],
    ),
    (
        "preds-lat-range",
        LABEL_HEADER,
        GOOD_LABELS,
        PRED_HEADER,
        preds_with(0, ("a.jpg", -91, 0)),
        [],
        ["preds.csv", "row 1 (line 2)", "column 'lat'", "-91 is out of range"],
    ),
    (
        "preds-duplicate",
        LABEL_HEADER,
        GOOD_LABELS,
        PRED_HEADER,
        [*GOOD_PREDS, ("a.jpg", 1, 1)],
        [],
        ["preds.csv", "row 6 (line 7)", "'a.jpg' already appears in row 1"],
    ),
    (
        "preds-half-expert",
        LABEL_HEADER,
        GOOD_LABELS,
        [*PRED_HEADER, "gallery_lat", "gallery_lon"],
        [(*p, 0, 0) for p in GOOD_PREDS[:4]] + [("e.jpg", 0, 0, 0, "")],
        [],
        ["preds.csv", "row 5 (line 6)", "column 'gallery_lon'", "is empty but 'gallery_lat' is not"],
    ),
    (
        "preds-expert-bad-value",
        LABEL_HEADER,
        GOOD_LABELS,
        [*PRED_HEADER, "gallery_lat", "gallery_lon"],
        [(*p, 0, 0) for p in GOOD_PREDS[:4]] + [("e.jpg", 0, 0, 0, 999)],
        [],
        ["row 5 (line 6)", "column 'gallery_lon'", "999 is out of range"],
    ),
    (
        "preds-expert-unpaired",
        LABEL_HEADER,
        GOOD_LABELS,
        [*PRED_HEADER, "gallery_lat"],
        [(*p, 0) for p in GOOD_PREDS],
        [],
        ["preds.csv", "column 'gallery_lat' has no matching 'gallery_lon' column"],
    ),
    (
        "preds-missing-images",
        LABEL_HEADER,
        GOOD_LABELS,
        PRED_HEADER,
        GOOD_PREDS[:3],
        [],
        ["no prediction for 2 of 5 labelled images", "d.jpg, e.jpg", "--allow-missing"],
    ),
    (
        "preds-match-nothing",
        LABEL_HEADER,
        GOOD_LABELS,
        PRED_HEADER,
        [("zzz.jpg", 0, 0)],
        ["--allow-missing"],
        ["no prediction matches any of the 5 labelled images"],
    ),
    (
        "by-expert-without-experts",
        LABEL_HEADER,
        GOOD_LABELS,
        PRED_HEADER,
        GOOD_PREDS,
        ["--by-expert"],
        ["preds.csv", "--by-expert needs <expert>_lat,<expert>_lon column pairs"],
    ),
]


@pytest.mark.parametrize(
    ("label_header", "label_rows", "pred_header", "pred_rows", "extra", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
def test_bad_input_exits_2_with_a_message_naming_the_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    label_header: Sequence[str],
    label_rows: Sequence[Sequence[object]] | None,
    pred_header: Sequence[str],
    pred_rows: Sequence[Sequence[object]] | None,
    extra: list[str],
    fragments: list[str],
) -> None:
    root = tmp_path / "split"
    root.mkdir()
    if label_rows is not None:
        write_csv(root / "labels.csv", label_header, label_rows)
    preds = tmp_path / "preds.csv"
    if pred_rows is not None:
        write_csv(preds, pred_header, pred_rows)
    report_path = tmp_path / "report.json"

    code = main(["eval", "--data", str(root), "--predictions", str(preds), "--report", str(report_path), *extra])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    # The progress bar may have drawn on stderr first; the error is one line of its own.
    error_lines = [line for line in err.splitlines() if line.startswith("geoloc eval: error: ")]
    assert len(error_lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in error_lines[0]
    assert not report_path.exists()


def test_missing_data_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--data", str(tmp_path / "nowhere"), "--predictions", str(tmp_path / "p.csv")])
    assert code == 2
    assert "nowhere: no such directory" in capsys.readouterr().err


def test_bad_input_via_subprocess_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "geoloc.cli", "eval", "--data", str(tmp_path), "--predictions", str(tmp_path / "p.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("geoloc eval: error: ") and "labels.csv: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_labels_with_bom_and_trailing_blank_lines_load(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "labels.csv").write_text("\ufeffimage,lat,lon,author\na.jpg,1.5,-2.5,x\n\n\n", encoding="utf-8")
    split = load_split(root)
    assert [(r.image, r.lat, r.lon, r.author) for r in split.images] == [("a.jpg", 1.5, -2.5, "x")]
    assert split.images[0].path == root / "images" / "a.jpg"


@pytest.mark.im2gps3k
def test_real_im2gps3k_val_labels_load() -> None:
    split = load_split(data_root() / "im2gps3k" / "val")
    assert len(split) == 360
    assert split.name == "val"
    assert len({r.image for r in split.images}) == 360
    assert all(-90 <= r.lat <= 90 and -180 <= r.lon <= 180 for r in split.images)


def test_weighted_figures_are_those_of_the_photos_repeated_by_their_weights() -> None:
    """Integer weights (an odd total, so that the median is one photo's) give exactly the figures of
    the distances repeated that many times; a weight of zero drops its photo."""
    rng = np.random.default_rng(3)
    distances = rng.exponential(2000.0, 41)
    weights = rng.integers(0, 5, 41)
    weights[0] += 1 - weights.sum() % 2
    weighted, repeated = summarize(distances, weights=weights), summarize(np.repeat(distances, weights))
    assert weighted.accuracy == pytest.approx(repeated.accuracy, abs=1e-12)
    assert weighted.geoscore == pytest.approx(repeated.geoscore, rel=1e-12)
    assert weighted.mean_km == pytest.approx(repeated.mean_km, rel=1e-12)
    assert weighted.median_km == repeated.median_km
    assert summarize(distances, weights=weights / 7).geoscore == pytest.approx(weighted.geoscore, rel=1e-12)


@pytest.mark.parametrize("weights", [[1.0, -1.0], [0.0, 0.0], [1.0], [1.0, float("nan")]])
def test_summarize_rejects_weights_that_are_not_one_non_negative_number_per_distance(weights) -> None:
    with pytest.raises(ValueError, match="weights must be 2 finite non-negative numbers"):
        summarize([10.0, 20.0], weights=weights)

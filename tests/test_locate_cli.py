"""`geoloc locate` and `geoloc eval --orchestrator` against the real suite: Triton, the embedding
service, the three expert services and the orchestrator, each its own process on loopback, with
the shipped models and fusion. The commands run in-process through geoloc.cli.main."""

from __future__ import annotations

import json
import re
from importlib.util import find_spec
from pathlib import Path

import pytest
from PIL import Image

from geoloc.cli import main
from geoloc.client import world_map as world_map
from geoloc.common.ports import free_port
from geoloc.orchestrator.config import SHIPPED_FUSION
from geoloc.orchestrator.parameters import load_fusion
from tests.photos import write_split

pytestmark = pytest.mark.timeout(600)

EXPERT_NAMES = ("gallery", "flow", "sh", "tokens", "text")
KAUAI = Path(find_spec("geoclip").origin).parent / "images" / "Kauai.png"
# Where the split's photos are said to be taken: made up, but for Kauaʻi, since scoring is not under test.
PLACES = [
    (22.05, -159.5),
    (48.86, 2.35),
    (40.71, -74.0),
    (35.68, 139.65),
    (-33.87, 151.21),
    (-22.91, -43.17),
    (30.04, 31.24),
    (64.15, -21.94),
]


@pytest.fixture()
def orchestrator(orchestrator_address) -> str:
    """The session's orchestrator process (tests/conftest.py), in front of every expert."""
    return orchestrator_address


@pytest.fixture()
def split(photos, tmp_path) -> Path:
    """A labelled split folder of eight real photos (tests/conftest.py's `photos`), as geoloc eval reads one."""
    named = {f"photo-{i}.jpg": path for i, path in enumerate(photos[: len(PLACES)])}
    rows = [(name, lat, lon, f"author-{i}") for i, (name, (lat, lon)) in enumerate(zip(named, PLACES, strict=True))]
    return write_split(tmp_path / "split", rows, named)


def locate(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["locate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_locate_prints_the_best_guess_its_radii_and_every_experts_status(orchestrator, capsys):
    code, out, err = locate(capsys, str(KAUAI), "--address", orchestrator, "--top-k", "3")
    assert code == 0, err
    assert out.startswith("Kauai.png\n")
    best = re.search(r"best guess\s+(-?\d+\.\d+),\s+(-?\d+\.\d+)\s+p=(\d\.\d\d)\s+(\S.*)\s+\[fusion\]", out)
    assert best, out
    assert -90 <= float(best[1]) <= 90 and -180 <= float(best[2]) <= 180 and best[4].strip()
    assert re.search(r"50 % within [\d,.]+ km · 90 % within [\d,.]+ km · localizability \d\.\d\d", out), out
    fitted = load_fusion(SHIPPED_FUSION).parameters.weights
    for name in EXPERT_NAMES:
        if fitted.get(name, 0) > 0:
            assert re.search(rf"\b{name}\s+OK\s+\d+ ms\s+weight \d\.\d\d", out), (name, out)
        else:  # the fit gives it no weight: not asked by default, and the line says why
            assert re.search(rf"\b{name}\s+SKIPPED\s+\d+ ms\s+the fitted fusion gives it weight 0", out), (name, out)
    assert "EXIF GPS      none in the photo" in out  # a PNG screenshot: no EXIF
    assert re.search(r"timings\s+embed \d+ ms · experts \d+ ms · fusion \d+ ms · total \d+ ms", out), out


def test_locate_json_is_one_parsable_object_per_photo_and_the_map_marks_its_best_guess(
    orchestrator, capsys, tmp_path, photos
):
    second = photos[1]
    code, out, err = locate(
        capsys,
        str(KAUAI),
        str(second),
        "--address",
        orchestrator,
        "--json",
        "--top-k",
        "2",
        "--map",
        str(tmp_path / "where.png"),
    )
    assert code == 0, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["photo"] for a in answers] == [str(KAUAI), str(second)]
    for i, answer in enumerate(answers, 1):
        assert {"bestGuess", "hypotheses", "radius90Km", "expertOutputs", "distribution"} <= answer.keys()
        assert 1 <= len(answer["hypotheses"]) <= 2 and answer["hypotheses"][0] == answer["bestGuess"]
        assert {o["expert"] for o in answer["expertOutputs"]} == {
            "EXPERT_GALLERY",
            "EXPERT_SAMPLER_FLOW",
            "EXPERT_SAMPLER_SH_DIFFUSION",
            "EXPERT_TOKENS",
            "EXPERT_TEXT",
        }
        assert answer["map"] == str(tmp_path / f"where-{i}.png")
        with Image.open(answer["map"]) as image:
            assert image.format == "PNG" and image.size == (1440, 720)
            best = answer["bestGuess"]
            x = int((best["lonDeg"] + 180) / 360 * 1440)
            y = int((90 - best["latDeg"]) / 180 * 720)
            assert image.convert("RGB").getpixel((x, y)) == world_map.MARKER


def test_a_missing_photo_exits_2_naming_it_before_anything_is_sent(orchestrator, capsys, tmp_path):
    missing = tmp_path / "no-such-photo.jpg"
    code, out, err = locate(capsys, str(KAUAI), str(missing), "--address", orchestrator)
    assert code == 2 and str(missing) in err and "no such file" in err
    assert out == ""  # the good photo was not sent either


def test_an_unreachable_orchestrator_exits_1_and_says_to_start_the_suite(capsys):
    code, out, err = locate(capsys, str(KAUAI), "--address", f"127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach the orchestrator" in err and "geoloc up" in err and out == ""


def test_a_refused_photo_prints_the_servers_message_exits_2_and_the_rest_are_still_located(
    orchestrator, capsys, tmp_path
):
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("these are words, not pixels")
    code, out, err = locate(capsys, str(not_a_photo), str(KAUAI), "--address", orchestrator)
    assert code == 2
    assert f"{not_a_photo}: the orchestrator refused it: image:" in err
    assert "Kauai.png" in out and "best guess" in out
    code, _, err = locate(capsys, str(KAUAI), "--address", orchestrator, "--top-k", "21")
    assert code == 2 and "options.top_k" in err


def test_eval_against_the_orchestrator_scores_the_fused_answer_and_each_expert_side_by_side(
    orchestrator, capsys, tmp_path, split
):
    report_path = tmp_path / "live.json"
    capsys.readouterr()
    code = main(
        ["eval", "--orchestrator", orchestrator, "--data", str(split), "--limit", "8", "--report", str(report_path)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) == {"answer", "fused", *EXPERT_NAMES}
    report = json.loads(report_path.read_text())
    live = report["live"]
    # Every photo was sent; a call that failed under load (an embedding past its timeout) is left
    # out and counted, not fatal, so the figures below hold for the photos answered.
    answered = live["answered"]
    assert live["sent"] == 8 and answered + sum(live["failures"].values()) == 8 and answered >= 6
    assert set(live["failures"]) == set(live["failure_examples"])
    assert re.match(rf"\| fused \| {answered} \|( \d+\.\d \|){{5}} \d+ \| [\d,]+ \| {answered}/8 \|$", rows["fused"]), (
        rows
    )
    assert "calibration of the fused radii:" in out and "expert statuses: gallery OK" in out
    assert report["source"] == f"orchestrator:{orchestrator}" and report["n"] == answered
    assert set(report["metrics"]["accuracy_within_km"]) == {"1", "25", "200", "750", "2500"}
    assert 0 <= report["metrics"]["geoscore"] <= 5000 and report["metrics"]["median_km"] >= 0
    for name in EXPERT_NAMES:
        statuses = live["expert_statuses"][name]
        assert sum(statuses.values()) == answered
        # Scored where the expert answered with a point; the text expert answers OK with none where a
        # photo has no text, and is scored on the rest.
        scored = report["experts"][name]["n"] if report["experts"][name] else 0
        assert scored == statuses.get("OK", 0) if name != "text" else scored <= statuses.get("OK", 0)
        assert re.match(rf"\| {name} \| {scored} \|", rows[name]), rows[name]
    assert live["expert_statuses"]["gallery"] == {"OK": answered}
    within_50, within_90 = live["calibration"]["within_radius_50"], live["calibration"]["within_radius_90"]
    assert 0 <= within_50 <= within_90 <= 1
    assert live["photos_per_s"] > 0


def test_eval_against_an_unreachable_orchestrator_exits_1_and_says_to_start_the_suite(capsys, split):
    code = main(["eval", "--orchestrator", f"127.0.0.1:{free_port()}", "--data", str(split), "--limit", "2"])
    out, err = capsys.readouterr()
    assert code == 1 and "geoloc up" in err and "|" not in out

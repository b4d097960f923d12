"""The shipped models' answers on the first Im2GPS3k val photos, pinned: a change that moves them fails.

A refactoring must not change what the suite answers. This computes, in-process and exactly as
the services do (geoloc.training.expert_outputs, then the orchestrator's fuse), every expert's
answer and the fused answer for the first PHOTOS val photos, and compares them with
tests/data/val_answers.json, written by the code before the change. A deliberate change of a
model or of the fusion regenerates the file, and says so in its commit:

    .venv/bin/python -m tests.test_val_answers --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

PINNED = Path(__file__).parent / "data" / "val_answers.json"
PHOTOS = 24
# float32 networks round differently on other CPUs (CI's differs from this machine's by 3.6e-6
# relative in one probability), so the pin allows 1e-4: about 10 m in position, and far below
# what any change of a model, a seed or the fusion moves.
POSITION_DEG = 1e-4
RELATIVE = 1e-4

pytestmark = [
    pytest.mark.im2gps3k,
    pytest.mark.slow,
    pytest.mark.timeout(600),
]  # 24 photos through every expert: ~1-2 min


def val_answers(photos: int = PHOTOS) -> dict:
    """{"models", "fusion", "answers": [per photo: image, radii, localizability, hypotheses]}."""
    from geoloc.evaluation.dataset import im2gps3k_split
    from geoloc.orchestrator.config import SHIPPED_FUSION
    from geoloc.orchestrator.fusion import fuse
    from geoloc.orchestrator.parameters import load_fusion
    from geoloc.training.expert_outputs import ExpertRequests, compute_expert_outputs, models_fingerprint, photo_answers
    from geoloc.training.features import split_features

    val = im2gps3k_split("val")
    outputs = compute_expert_outputs(split_features(val, progress=False)[:photos], ExpertRequests())
    fitted = load_fusion(SHIPPED_FUSION)
    answers = []
    for row in range(photos):
        answer = fuse(photo_answers(outputs, row), fitted.parameters, fitted.prior)
        answers.append(
            {
                "image": val.images[row].image,
                "radius_50_km": answer.radius_50_km,
                "radius_90_km": answer.radius_90_km,
                "localizability": answer.localizability,
                "hypotheses": [
                    [h.lat_deg, h.lon_deg, h.probability, h.radius_50_km, h.radius_90_km] for h in answer.hypotheses
                ],
            }
        )
    return {"models": models_fingerprint(), "fusion": fitted.version, "answers": answers}


@pytest.fixture(scope="module")
def pinned_and_now() -> tuple[dict, dict]:
    return json.loads(PINNED.read_text()), val_answers(len(json.loads(PINNED.read_text())["answers"]))


def test_the_pin_is_of_the_shipped_models(pinned_and_now):
    pinned, now = pinned_and_now
    assert (now["models"], now["fusion"]) == (pinned["models"], pinned["fusion"]), (
        "the shipped models or fusion changed: regenerate the pin (see this module's docstring)"
    )


def test_every_answer_is_the_pinned_one(pinned_and_now):
    pinned, now = pinned_and_now
    assert [a["image"] for a in now["answers"]] == [a["image"] for a in pinned["answers"]]
    for want, got in zip(pinned["answers"], now["answers"], strict=True):
        where = want["image"]
        assert len(got["hypotheses"]) == len(want["hypotheses"]), where
        hyp_want, hyp_got = np.array(want["hypotheses"]), np.array(got["hypotheses"])
        np.testing.assert_allclose(hyp_got[:, :2], hyp_want[:, :2], atol=POSITION_DEG, err_msg=f"{where}: positions")
        np.testing.assert_allclose(
            hyp_got[:, 2:], hyp_want[:, 2:], rtol=RELATIVE, err_msg=f"{where}: probability, radii"
        )
        for key in ("radius_50_km", "radius_90_km", "localizability"):
            assert got[key] == pytest.approx(want[key], rel=RELATIVE), f"{where}: {key}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python -m tests.test_val_answers --write   (rewrites {PINNED})")
    PINNED.write_text(json.dumps(val_answers(), indent=1) + "\n")
    print(f"wrote {PINNED}")

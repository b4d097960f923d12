"""The geoloc.v1 API: lint rules hold and the committed stubs match the .proto files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from geoloc.common.paths import CHECKOUT
from geoloc.v1 import common_pb2, gallery_pb2, judge_pb2, orchestrator_pb2, sampler_pb2, tokens_pb2

ROOT = CHECKOUT


def test_buf_lint_standard_and_comments_rules_pass():
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        pytest.skip("buf is not installed (pip install buf-bin); scripts/setup.sh installs it")
    result = subprocess.run([buf, "lint"], cwd=ROOT / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_stubs_are_generated_from_the_current_protos():
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_expert_answers_with_the_shared_weighted_point():
    point = common_pb2.WeightedPoint.DESCRIPTOR
    for message, field in (
        (gallery_pb2.SearchResponse, "points"),
        (sampler_pb2.SampleResponse, "samples"),
        (sampler_pb2.SampleResponse, "modes"),
        (tokens_pb2.DecodeResponse, "points"),
        (judge_pb2.JudgeResponse, "points"),
        (orchestrator_pb2.ExpertOutput, "points"),
    ):
        assert message.DESCRIPTOR.fields_by_name[field].message_type is point, (message, field)


def test_unset_optional_parameters_are_distinguishable_from_zero():
    # Guidance 0 is a real choice (no guidance), so "unset" must not read as 0.
    request = sampler_pb2.SampleRequest()
    assert not request.HasField("guidance") and not request.HasField("seed")
    request.guidance = 0.0
    assert request.HasField("guidance")

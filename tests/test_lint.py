"""ruff's lint rules and format (configured in pyproject.toml) hold for the whole repository."""

from __future__ import annotations

import subprocess
import sys

import pytest

from geoloc.common.paths import CHECKOUT


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(check):
    run = subprocess.run(
        [sys.executable, "-m", "ruff", *check, "--no-cache", "."],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, (
        f"ruff {' '.join(check)} found problems (fix with `ruff {check[0]}`):\n{run.stdout}{run.stderr}"
    )

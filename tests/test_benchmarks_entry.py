"""The benchmarks start both ways the docs give: as a script and as a module of the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["benchmarks/run.py"], ["-m", "benchmarks.run"]])
def test_run_help_lists_every_benchmark(command):
    src = str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "holdout-4-8" in done.stdout and "peers" in done.stdout and "--quick" in done.stdout

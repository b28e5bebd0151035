"""Property-based fuzzing of every input parser: a correct result or a one-line ReconadError.

The number of examples comes from the Hypothesis profile named by ``$HYPOTHESIS_PROFILE``
(``dev`` 30, ``ci`` 300; see conftest.py). ``benchmarks/fuzz.py`` runs 10,000 per parser.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from fuzz_targets import TARGETS, run_check
from hypothesis import HealthCheck, given, settings


def _fuzz_test(name):
    target = TARGETS[name]

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(target.inputs)
    def property_holds(example):
        run_check(target, example)

    return property_holds


test_idx_files = _fuzz_test("idx")
test_numpy_files = _fuzz_test("numpy")
test_csv_files = _fuzz_test("csv")
test_image_folders = _fuzz_test("image_folder")
test_yaml_configs = _fuzz_test("yaml_config")
test_set_overrides = _fuzz_test("set_overrides")
test_detector_files = _fuzz_test("detector")


@pytest.mark.parametrize(("args", "files"), [
    (["run", "CONFIG"], {"config.yaml": b"model: [unclosed\n"}),
    (["run", "CONFIG"], {"config.yaml": b"\xff\xfe\x00garbage"}),
    (["run", "default", "--set", "train.epochs=[1, {"], {}),
    (["run", "default", "--set", "model.latent=1e999"], {}),
    (["score", "DETECTOR", "INPUT"], {"detector.safetensors": b"\x08" + b"\0" * 7 + b"{}",
                                      "input.npy": b"\x93NUMPY garbage"}),
    (["score", "DETECTOR", "INPUT"], {"detector.safetensors": b"", "input.npy": b""}),
])
def test_the_command_fails_in_one_line_and_writes_nothing(tmp_path, args, files):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    names = {"CONFIG": "config.yaml", "DETECTOR": "detector.safetensors", "INPUT": "input.npy"}
    argv = [str(tmp_path / names[a]) if a in names else a for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run([sys.executable, "-m", "reconad", *argv, "--out",
                             str(tmp_path / "out")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: \S", lines[0]), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written

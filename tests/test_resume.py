"""A run killed with SIGKILL resumes from its last finished epoch and ends exactly like an
uninterrupted one; two runs of the same --out at once: one wins, the other is a one-line error.

These start the real command in subprocesses, as a user (or a batch scheduler) would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tolerances import assert_close

from reconad.files import lock_name, partial_dir_name

# Many short epochs on a small MNIST subset: the kill lands between two of them.
EPOCHS = 25
SMALL = ["--set", "data.max_train=1500", "--set", "data.max_test=300",
         "--set", f"train.epochs={EPOCHS}", "--set", "train.patience=100",
         "--set", "train.batch_size=16", "--set", "model.members=1",
         "--set", "model.hidden=[64]", "--set", "score.knn_bank=500", "--set", "train.threads=1"]
TIMING = {"wall_seconds", "train_seconds"}  # the only numbers allowed to differ


def _command(mnist_dir, out, *extra):
    quiet = [] if "--resume" in extra else ["--quiet"]  # a resume says where it resumed
    return [sys.executable, "-m", "reconad", "run", "default", *SMALL, "--data-dir",
            str(mnist_dir), "--out", str(out), *quiet, *extra]


def _run(mnist_dir, out, *extra):
    return subprocess.run(_command(mnist_dir, out, *extra), capture_output=True, text=True,
                          timeout=300)


def _history(run_dir):
    with (run_dir / "history.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _assert_same_numbers(actual, expected, where="metrics"):
    """Equal JSON trees; floats within the float32 tolerance, timings ignored."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            if key not in TIMING:
                _assert_same_numbers(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same_numbers(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert_close(actual, expected, what=where)
    else:
        assert actual == expected, where


@pytest.fixture(scope="module")
def uninterrupted(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    result = _run(mnist_dir, out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_sigkill_then_resume_ends_like_an_uninterrupted_run(mnist_dir, tmp_path, uninterrupted):
    out = tmp_path / "run"
    checkpoint = partial_dir_name(out) / "checkpoint.pt"
    process = subprocess.Popen(_command(mnist_dir, out), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing under the final name
    killed_after = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_after < EPOCHS

    result = _run(mnist_dir, out, "--resume")
    assert result.returncode == 0, result.stderr
    assert f"resumed after epoch {killed_after}" in result.stderr
    assert not partial_dir_name(out).exists() and not lock_name(out).exists()
    assert not (out / "checkpoint.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    _assert_same_numbers(metrics, json.loads((uninterrupted / "metrics.json").read_text()))
    resumed, whole = _history(out), _history(uninterrupted)
    assert [r["epoch"] for r in resumed] == [str(e) for e in range(1, EPOCHS + 1)]
    for key in ("train_loss", "val_loss", "lr"):
        assert_close([float(r[key]) for r in resumed], [float(r[key]) for r in whole], what=key)


@pytest.mark.slow
def test_ctrl_c_still_writes_the_run_with_the_best_model(mnist_dir, tmp_path):
    out = tmp_path / "run"
    checkpoint = partial_dir_name(out) / "checkpoint.pt"
    # The run must see Ctrl-C even where this test runs with SIGINT ignored (a shell's background
    # job, nohup): a process inherits an ignored SIGINT, and Python then installs no
    # KeyboardInterrupt for it. Reproduced with `trap '' INT; pytest -k ctrl_c`.
    process = subprocess.Popen(_command(mnist_dir, out), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    training = json.loads((out / "metrics.json").read_text())["training"]
    assert training["interrupted"] and 1 <= training["epochs_run"] < EPOCHS, (training, stderr)
    assert not (out / "checkpoint.pt").exists() and not partial_dir_name(out).exists()
    assert not lock_name(out).exists()


def test_resume_with_another_config_is_refused_and_keeps_the_checkpoint(mnist_dir, tmp_path):
    out = tmp_path / "run"
    partial = partial_dir_name(out)
    partial.mkdir(parents=True)
    (partial / "checkpoint.pt").write_bytes(b"kept")
    (partial / "config.yaml").write_text("name: something else\n")
    result = _run(mnist_dir, out, "--resume")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot resume")
    assert "Traceback" not in result.stderr
    assert (partial / "checkpoint.pt").read_bytes() == b"kept"


def test_two_runs_of_the_same_out_one_wins(mnist_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ}
    both = [subprocess.Popen(_command(mnist_dir, out, "--set", f"seed={seed}"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed in (1, 2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in both]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [err for _, _, err in results]
    loser = next(err for code, _, err in results if code == 2)
    lines = loser.strip().splitlines()
    assert len([line for line in lines if line.startswith("error: ")]) == 1
    assert "Traceback" not in loser
    # Usually the loser meets the lock; if it started after the winner finished, the
    # finished directory itself refuses it.
    assert "another reconad process" in lines[-1] or "already exists" in lines[-1]
    winner_seed = 1 if results[0][0] == 0 else 2
    config = (out / "config.yaml").read_text()
    assert f"seed: {winner_seed}" in config  # the directory is all the winner's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

"""The `reconad` command: a real run, scoring, and one-line errors with a non-zero exit."""

from __future__ import annotations

import csv
import gzip
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tolerances import assert_close

from reconad.config import preset_names

TINY = ["--set", "data.max_train=500", "--set", "data.max_test=300", "--set", "train.epochs=1"]


def reconad(*args, cwd=None, env=None, timeout=300):
    """Run the CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "reconad", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, pattern):
    assert result.returncode == 2, result.stderr
    # Progress lines may come first; the error is one line, the last.
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]], result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(pattern, lines[-1]), lines[-1]


@pytest.fixture(scope="module")
def cli_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = reconad("run", "default", *TINY, "--data-dir", mnist_dir, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_prints_a_summary_and_writes_the_directory(cli_run):
    out, result = cli_run
    assert "AUROC" in result.stdout and "youden" in result.stdout
    assert f"run written to {out}" in result.stdout
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()


def test_score_writes_a_flag_per_image(cli_run, tmp_path):
    out, _ = cli_run
    rng = np.random.default_rng(0)
    images = (rng.random((7, 28, 28)) * 255).astype(np.uint8)
    np.savez(tmp_path / "new.npz", x=images, y=np.arange(7))
    result = reconad("score", out / "detector.safetensors", tmp_path / "new.npz",
                     "--out", tmp_path / "scores.csv")
    assert result.returncode == 0, result.stderr
    with (tmp_path / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["label"]) for r in rows] == list(range(7))
    assert [r["id"] for r in rows] == [f"new.npz[{i}]" for i in range(7)]
    from reconad.detector import Detector

    det = Detector.load(out / "detector.safetensors")
    expected = det.anomaly_score(images)
    assert_close([float(r["score"]) for r in rows], expected, what="CSV scores")
    assert [int(r["flag"]) for r in rows] == list((expected > det.threshold_).astype(int))
    assert "of 7 images flagged" in result.stderr


def test_score_to_stdout(cli_run, tmp_path):
    out, _ = cli_run
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 28, 28), np.float32))
    result = reconad("score", out / "detector.safetensors", tmp_path / "x.npy")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "id,label,class,score,flag"
    assert len(result.stdout.splitlines()) == 4


def test_presets_lists_every_preset_with_a_line():
    result = reconad("presets")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert all(len(line.split(None, 1)) == 2 for line in lines)


@pytest.mark.parametrize(("args", "pattern"), [
    (["run", "nope"], r"unknown preset 'nope'"),
    (["run", "default", "--set", "train.epoch=2"], r"did you mean 'train.epochs'"),
    (["run", "default", "--set", "train.epochs=-1"], r"invalid value for train.epochs"),
    (["run", "default", "--set", "scenario.val_fraction=2"], r"scenario.val_fraction"),
    (["run", "default", "--set", "data.max_train"], r"section.key=value"),
    (["run", "default", "--resume"], r"--resume needs --out"),
])
def test_config_errors_are_one_line(args, pattern):
    assert_one_line_error(reconad(*args), pattern)


def test_missing_dataset_offline_says_where_to_put_the_files(tmp_path):
    # No other place to find MNIST: not $RECONAD_DATA (CI sets it), not the user cache.
    env = {k: v for k, v in os.environ.items() if k != "RECONAD_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = reconad("run", "default", "--data-dir", data_dir, "--set", "data.download=false",
                     cwd=tmp_path, env=env, timeout=60)
    assert_one_line_error(result, r"train-images-idx3-ubyte\.gz")
    assert str(data_dir) in result.stderr
    assert not (tmp_path / "runs").exists()


def test_truncated_idx_file_is_named(mnist_dir, tmp_path):
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((mnist_dir / name).read_bytes())
    full = gzip.decompress((mnist_dir / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(full[:5000]))
    result = reconad("run", "default", "--data-dir", tmp_path, "--set", "data.download=false",
                     "--out", tmp_path / "run")
    assert_one_line_error(result, r"train-images-idx3-ubyte")
    assert not (tmp_path / "run").exists()


def test_empty_class_selection(mnist_dir, tmp_path):
    result = reconad("run", "one-class-0", *TINY, "--data-dir", mnist_dir,
                     "--set", "scenario.normal=[11]", "--out", tmp_path / "run")
    assert_one_line_error(result, r"11")
    assert not (tmp_path / "run").exists()


def test_latent_larger_than_the_input(mnist_dir, tmp_path):
    result = reconad("run", "default", *TINY, "--data-dir", mnist_dir,
                     "--set", "model.latent=5000", "--out", tmp_path / "run")
    assert_one_line_error(result, r"latent")


def test_damaged_detector(cli_run, tmp_path):
    out, _ = cli_run
    broken = tmp_path / "det.safetensors"
    broken.write_bytes((out / "detector.safetensors").read_bytes()[:300])
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.float32))
    assert_one_line_error(reconad("score", broken, tmp_path / "x.npy"), "damaged or was edited")


def test_bad_score_inputs(cli_run, tmp_path):
    out, _ = cli_run
    det = out / "detector.safetensors"
    (tmp_path / "notimg").mkdir()
    (tmp_path / "notimg" / "a.png").write_text("not an image")
    assert_one_line_error(reconad("score", det, tmp_path / "notimg"), r"a\.png")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("L", (28, 28)).save(mixed / "a.png")
    Image.new("L", (30, 20)).save(mixed / "b.png")
    assert_one_line_error(reconad("score", det, mixed), r"resize")
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((2, 28, 28)))
    assert_one_line_error(reconad("score", det, tmp_path / "wrong.npz"), r"'x' or 'images'")
    bad = np.zeros((2, 28, 28), np.float32)
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert_one_line_error(reconad("score", det, tmp_path / "nan.npy"), r"NaN")
    np.save(tmp_path / "big.npy", np.full((2, 20, 20), 0.5, np.float32))
    assert_one_line_error(reconad("score", det, tmp_path / "big.npy"), r"resize them to 28x28")
    assert_one_line_error(reconad("score", det, tmp_path / "absent.npz"), r"does not exist")


def test_own_image_folder_end_to_end(tmp_path):
    """A folder of RGB PNGs of another size: trained with resize, scored with the same resize."""
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for cls in range(3):
        (root / f"kind{cls}").mkdir(parents=True)
        for i in range(40):
            image = (rng.random((20, 20, 3)) * 40).astype(np.uint8)
            image[4 + 5 * cls: 7 + 5 * cls, 2:18] = 230  # a bar whose row depends on the class
            Image.fromarray(image).save(root / f"kind{cls}" / f"{i}.png")
    out = tmp_path / "run"
    result = reconad("run", "default", "--out", out, "--quiet",
                     "--set", f"data.source={root}", "--set", "data.resize=[16,16]",
                     # classes by folder name or by number
                     "--set", "scenario.normal=[kind0]", "--set", "scenario.dev_anomaly=[kind1]",
                     "--set", "scenario.eval_anomaly=[2]", "--set", "train.epochs=3",
                     "--set", "model.latent=8", "--set", "train.batch_size=16",
                     # one normal class: no class head to train, so no class energy
                     "--set", "model.class_head=false", "--set", "score.parts=[recon,latent_knn]")
    assert result.returncode == 0, result.stderr
    from reconad.detector import Detector

    det = Detector.load(out / "detector.safetensors")
    assert det.input_shape_ == (3, 16, 16)
    assert det.preprocessing_ == {"resize": [16, 16], "grayscale": False}
    scored = reconad("score", out / "detector.safetensors", root)
    assert scored.returncode == 0, scored.stderr
    rows = list(csv.DictReader(scored.stdout.splitlines()))
    assert len(rows) == 120 and rows[80]["id"] == "kind2/0.png" and rows[80]["class"] == "kind2"

"""Device choice (--device / train.device / Detector(device=)), mixed-precision settings and the
memory-bounded scoring pass, all on the CPU (the GPU paths are in test_gpu.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from tolerances import FLOAT32, assert_close

from reconad.config import load_config
from reconad.detector import Detector
from reconad.device import amp_dtype, available_devices, resolve_device, to_device
from reconad.errors import ReconadError
from reconad.score import _passes as scoring


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_is_the_cpu_without_an_accelerator(no_accelerator):
    assert available_devices() == ["cpu"]
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "mps"


@pytest.mark.parametrize("name", ["cuda", "mps", "cuda:0"])
def test_an_unavailable_device_is_one_line_naming_what_is_available(no_accelerator, name):
    with pytest.raises(ReconadError, match=r"not available .*\(available: cpu\)") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cpu:1", "cuda:x"])
def test_unknown_devices_are_refused(name):
    with pytest.raises(ReconadError, match="unknown device"):
        resolve_device(name)


def test_mixed_precision_is_for_cuda_only(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for amp in ("auto", True, False):
        assert amp_dtype(amp, cpu) is None
        assert amp_dtype(amp, torch.device("mps")) is None
    assert amp_dtype(False, cuda) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype("auto", cuda) == amp_dtype(True, cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype("auto", cuda) == torch.float16


def test_cpu_batches_are_not_copied():
    batch = torch.zeros(2, 1, 4, 4)
    assert to_device(batch, torch.device("cpu")) is batch


def test_config_device_and_amp_are_validated():
    cfg = load_config("default", ["train.device=cpu", "train.amp=false"])
    assert cfg.train.device == "cpu" and cfg.train.amp is False
    assert load_config("default").train.device == "auto"
    assert load_config("default").train.amp == "auto"
    with pytest.raises(ReconadError, match="train.device"):
        load_config("default", ["train.device=tpu"])
    with pytest.raises(ReconadError, match="train.amp"):
        load_config("default", ["train.amp=sometimes"])


def test_detector_device_param_trains_and_loads_on_the_cpu(tiny_images, tmp_path):
    x, y = tiny_images
    det = Detector(model={"kind": "dense", "hidden": [16], "latent": 4}, device="cpu",
                   train={"epochs": 1, "batch_size": 32}).fit(x[y < 2][:100])
    assert det.get_params()["device"] == "cpu" and det.device_ == torch.device("cpu")
    loaded = Detector.load(det.save(tmp_path / "det.safetensors"), device="cpu")
    assert loaded.device_ == torch.device("cpu") and loaded.get_params()["device"] == "cpu"
    assert_close(loaded.anomaly_score(x), det.anomaly_score(x), "scores", FLOAT32)


def test_detector_on_an_unavailable_device_fails_before_training(no_accelerator, tiny_images,
                                                                  tmp_path):
    x, _ = tiny_images
    det = Detector(model={"kind": "dense", "hidden": [8], "latent": 2}, device="cuda")
    with pytest.raises(ReconadError, match=r"device cuda is not available"):
        det.fit(x[:50])
    assert not hasattr(det, "model_")
    with pytest.raises(ReconadError, match=r"device mps is not available"):
        Detector.load(tmp_path / "missing.safetensors", device="mps")


def test_pass_size_is_bounded_by_image_values():
    assert scoring.images_per_pass((1, 28, 28)) == scoring.CHUNK
    assert scoring.images_per_pass((3, 128, 128)) == 85
    assert scoring.images_per_pass((3, 512, 512)) == 5
    assert scoring.images_per_pass((3, 4096, 4096)) == 1


def test_large_image_scores_do_not_depend_on_the_batch(monkeypatch):
    monkeypatch.setattr(scoring, "PASS_VALUES", 3 * 3 * 16 * 16)  # 3 images per pass
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (8, 3, 16, 16)).astype(np.float32)
    det = Detector(model={"kind": "conv", "channels": [4, 8], "latent": 4}, device="cpu",
                   train={"epochs": 1, "batch_size": 4}, val_fraction=0.25).fit(x)
    whole = det.anomaly_score(x)
    assert_close(np.concatenate([det.anomaly_score(x[:5]), det.anomaly_score(x[5:])]), whole,
                 "scores in other batches", FLOAT32)
    assert_close(det.anomaly_score(x[4:5]), whole[4:5], "one image alone", FLOAT32)


def _unavailable() -> str:
    found = available_devices()
    return next(d for d in ("cuda", "mps") if d not in found)


def test_cli_run_and_score_refuse_an_unavailable_device(tmp_path):
    import subprocess

    from test_cli import assert_one_line_error

    name = _unavailable()
    run = subprocess.run([sys.executable, "-m", "reconad", "run", "default", "--device", name,
                          "--out", str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=120)
    assert_one_line_error(run, rf"device {name} is not available .*available: cpu")
    assert not (tmp_path / "run").exists()
    score = subprocess.run([sys.executable, "-m", "reconad", "score",
                            str(tmp_path / "det.safetensors"), "mnist", "--device", name],
                           capture_output=True, text=True, timeout=120)
    assert_one_line_error(score, rf"device {name} is not available")


def test_cli_device_option_sets_train_device(monkeypatch):
    from typer.testing import CliRunner

    import reconad.pipeline
    from reconad.cli import app

    seen = []

    def fake_run(config, *args, **kwargs):
        seen.append(config.train.device)
        raise ReconadError("stop here")

    monkeypatch.setattr(reconad.pipeline, "run", fake_run)
    result = CliRunner().invoke(app, ["run", "default", "--device", "cpu"])
    assert seen == ["cpu"], result.output
    result = CliRunner().invoke(app, ["run", "default", "--set", "train.device=cpu"])
    assert seen == ["cpu", "cpu"], result.output


def test_the_mixed_precision_training_path_runs(tiny_images, monkeypatch):
    """The autocast path (CUDA only in use) exercised on the CPU with bfloat16: losses stay
    float32 and finite, training still learns, and the numbers differ from float32 (so
    autocast was on)."""
    import reconad.train._loop

    x, y = tiny_images

    def fit():
        return Detector(model={"kind": "conv", "channels": [4, 8], "latent": 4}, device="cpu",
                        score="ssim", loss={"kind": "mix"},
                        train={"epochs": 3, "batch_size": 32, "lr": 3e-3}).fit(x[y < 2][:160])

    full = [r["train_loss"] for r in fit().history_.rows]
    monkeypatch.setattr(reconad.train._loop, "amp_dtype", lambda amp, device: torch.bfloat16)
    half = [r["train_loss"] for r in fit().history_.rows]
    assert np.isfinite(half).all() and half[-1] < half[0]
    assert half != full
    assert_close(half, full, "bf16 vs fp32 losses", type(FLOAT32)(rtol=0.2, atol=1e-3))

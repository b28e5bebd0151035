"""Training and scoring on a CUDA GPU agree with the CPU; mixed precision; pinned transfers.

Every test here needs CUDA and is skipped without it (CI has no GPU: the skip is expected
there). Run them on a GPU machine with ``pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import DEVICE, FLOAT32, assert_close

from reconad.detector import Detector

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs CUDA (torch.cuda.is_available() is false; CI has no GPU, "
                              "so these are skipped there by design)"),
]

MODELS = {
    "dense": {"kind": "dense", "hidden": [32], "latent": 4},
    "conv": {"kind": "conv", "channels": [8, 16], "latent": 8},
}


def _detector(model: dict, device: str, **train) -> Detector:
    return Detector(model=model, device=device, seed=0,
                    train={"epochs": 2, "batch_size": 32, "lr": 3e-3, **train})


@pytest.fixture(autouse=True)
def _exact_float32():
    """No TF32 on the GPU: CPU and GPU then differ only by float32 summation order."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_cuda_training_and_scores_match_the_cpu(tiny_images, kind):
    x, y = tiny_images
    normal, test = x[y < 3][:240], x[::7]
    cpu = _detector(MODELS[kind], "cpu").fit(normal)
    gpu = _detector(MODELS[kind], "cuda", amp=False).fit(normal)
    assert gpu.device_.type == "cuda" and next(gpu.model_.parameters()).is_cuda
    assert_close([r["train_loss"] for r in gpu.history_.rows],
                 [r["train_loss"] for r in cpu.history_.rows], "train loss", DEVICE)
    scores = gpu.anomaly_score(test)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float64
    assert_close(scores, cpu.anomaly_score(test), "scores", DEVICE)


def test_a_cpu_trained_detector_scores_alike_on_cuda(tiny_images, tmp_path):
    x, y = tiny_images
    det = _detector(MODELS["conv"], "cpu").fit(x[y < 3][:240])
    path = det.save(tmp_path / "det.safetensors")
    on_gpu = Detector.load(path, device="cuda")
    assert on_gpu.device_.type == "cuda"
    assert_close(on_gpu.anomaly_score(x), det.anomaly_score(x), "scores", FLOAT32)
    # and the weights saved from the GPU load on the CPU
    back = Detector.load(on_gpu.save(tmp_path / "again.safetensors"), device="cpu")
    assert_close(back.anomaly_score(x), det.anomaly_score(x), "scores", FLOAT32)


@pytest.mark.parametrize("bf16", [True, False], ids=["bfloat16", "float16+GradScaler"])
def test_mixed_precision_training_works(tiny_images, monkeypatch, bf16):
    if not bf16:  # force the float16 path (with loss scaling) on a GPU that has bfloat16
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    x, y = tiny_images
    normal = x[y < 3][:240]
    det = _detector(MODELS["conv"], "cuda", amp=True, epochs=3).fit(normal)
    losses = [r["train_loss"] for r in det.history_.rows]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    scores = det.anomaly_score(x)
    assert np.isfinite(scores).all()
    reference = _detector(MODELS["conv"], "cuda", amp=False, epochs=3).fit(normal)
    # half precision changes the training path, not what is learnt: same ballpark
    assert abs(losses[-1] - reference.history_.rows[-1]["train_loss"]) < 0.5 * losses[0]


def test_batches_reach_the_gpu_through_pinned_memory(tiny_images, monkeypatch):
    pinned = []
    real = torch.Tensor.pin_memory

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        pinned.append(out.is_pinned())
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    x, y = tiny_images
    _detector(MODELS["dense"], "cuda", epochs=1).fit(x[y < 3][:240])
    assert pinned and all(pinned)

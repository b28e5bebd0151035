"""score.complexity=tv: the reconstruction error divided by the image's total variation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import assert_close

from reconad.config import load_config
from reconad.detector import Detector
from reconad.errors import ReconadError
from reconad.losses import per_image_loss
from reconad.score import TV_FLOOR, recon_error, total_variation


def _tv_oracle(x: np.ndarray) -> np.ndarray:
    """Plain NumPy: mean |vertical neighbour difference| + mean |horizontal one|, per image."""
    dy = np.abs(np.diff(x, axis=2)).reshape(len(x), -1).mean(1)
    dx = np.abs(np.diff(x, axis=3)).reshape(len(x), -1).mean(1)
    return dy + dx


def test_total_variation_of_known_images():
    blank = torch.zeros(1, 1, 6, 6)
    stripes = torch.zeros(1, 1, 6, 6)
    stripes[..., ::2] = 1.0  # columns alternate: every horizontal step changes by 1
    checker = (torch.arange(6).view(6, 1) + torch.arange(6).view(1, 6)) % 2
    x = torch.cat([blank, stripes, checker.float().view(1, 1, 6, 6)])
    assert total_variation(x).tolist() == [0.0, 1.0, 2.0]


def test_total_variation_matches_numpy_on_random_rgb_images():
    x = np.random.default_rng(0).random((5, 3, 9, 7), dtype=np.float32)
    np.testing.assert_allclose(total_variation(torch.from_numpy(x)).numpy(), _tv_oracle(x),
                               rtol=1e-5)


def test_recon_error_divides_by_total_variation_with_a_floor():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((4, 1, 8, 8), dtype=np.float32))
    x[3] = 0.0  # blank: total variation 0, divided by the floor instead
    x_hat = torch.from_numpy(rng.random((4, 1, 8, 8), dtype=np.float32))
    for kind in ("mse", "l1"):
        raw = per_image_loss(kind, x_hat, x)
        relative = recon_error(x_hat, x, kind, "tv")
        expected = raw / torch.tensor([*_tv_oracle(x.numpy())[:3], TV_FLOOR])
        torch.testing.assert_close(relative, expected, rtol=1e-5, atol=0)
        assert torch.equal(recon_error(x_hat, x, kind, "none"), raw)
    with pytest.raises(ReconadError, match="unknown score.complexity 'ink'"):
        recon_error(x_hat, x, "mse", "ink")


def test_detector_scores_relative_error_and_keeps_it_when_saved(tiny_images, tmp_path):
    x, y = tiny_images
    det = Detector(model={"hidden": [32], "latent": 4}, train={"epochs": 2},
                   score={"kind": "l1", "complexity": "tv"}).fit(x[y < 3])
    rec = torch.from_numpy(det.reconstruct(x))
    expected = (per_image_loss("l1", rec, torch.from_numpy(x)).double()
                / total_variation(torch.from_numpy(x)).double())
    assert_close(det.anomaly_score(x), expected.numpy(), what="relative error score")
    loaded = Detector.load(det.save(tmp_path / "det.safetensors"))
    assert loaded.scorer_.config.complexity == "tv"
    np.testing.assert_array_equal(loaded.anomaly_score(x), det.anomaly_score(x))
    # A composite score's recon part is the relative error too.
    parts = Detector(model={"hidden": [32], "latent": 4}, train={"epochs": 1},
                     score={"parts": ["recon", "latent_knn"], "complexity": "tv"}).fit(x)
    raw = per_image_loss("mse", torch.from_numpy(parts.reconstruct(x)), torch.from_numpy(x))
    np.testing.assert_allclose(parts.score_parts(x)["recon"],
                               (raw / total_variation(torch.from_numpy(x))).numpy(), rtol=1e-5)


def test_unknown_complexity_is_a_config_error():
    with pytest.raises(ReconadError, match="score.complexity"):
        load_config("default", ["score.complexity=blur"])

"""Local colour statistics map against a numpy/scipy brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from tolerances import assert_close

from reconad.errors import ReconadError
from reconad.score import ColorStats, local_stats

RNG = np.random.default_rng(0)
NORMAL = RNG.uniform(0, 1, (6, 3, 12, 14))
QUERY = RNG.uniform(0, 1, (2, 3, 12, 14))
SIGMAS = [1.0, 2.5]


def _stats_oracle(x: np.ndarray) -> np.ndarray:
    """(B, 2*C*S, H, W): per sigma the local means, then the local log stds, with scipy."""
    def blur(a: np.ndarray, sigma: float) -> np.ndarray:
        return np.stack([[gaussian_filter(ch, sigma, mode="reflect") for ch in img]
                         for img in a])

    out = []
    for sigma in SIGMAS:
        mean = blur(x, sigma)
        out += [mean, np.log(np.sqrt(np.maximum(blur(x * x, sigma) - mean**2, 0)) + 0.003)]
    return np.concatenate(out, axis=1)


def test_local_stats_are_scipy_gaussian_mean_and_log_std():
    got = local_stats(torch.tensor(QUERY), SIGMAS).numpy()
    np.testing.assert_allclose(got, _stats_oracle(QUERY), rtol=1e-6, atol=1e-7)


def test_map_is_the_mahalanobis_distance_to_the_normal_pixels():
    stats = ColorStats(SIGMAS).fit([torch.tensor(NORMAL[:4], dtype=torch.float32),
                                    torch.tensor(NORMAL[4:], dtype=torch.float32)])
    vectors = _stats_oracle(NORMAL).transpose(1, 0, 2, 3).reshape(12, -1)  # (D, pixels)
    mean = vectors.mean(1)
    cov = np.cov(vectors, bias=True)
    cov += max(1e-6 * np.diag(cov).mean(), 1e-12) * np.eye(len(cov))
    f = _stats_oracle(QUERY).transpose(0, 2, 3, 1) - mean  # (B, H, W, D)
    expected = np.einsum("bhwi,ij,bhwj->bhw", f, np.linalg.inv(cov), f)
    got = stats.map(torch.tensor(QUERY, dtype=torch.float32)).numpy()
    assert got.shape == (2, 12, 14)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-3)
    # a state dict round trip scores the same
    again = ColorStats.from_state_dict(SIGMAS, stats.state_dict())
    torch.testing.assert_close(again.map(torch.tensor(QUERY, dtype=torch.float32)),
                               torch.from_numpy(got))


def test_a_colour_shift_and_a_flat_square_stand_out():
    normal = torch.rand(30, 3, 24, 24)
    stats = ColorStats([2.0]).fit([normal])
    odd = normal[:2].clone()
    odd[0, 0, 6:14, 6:14] += 0.5  # redder, same grain
    odd[1, :, 6:14, 6:14] = 0.5  # a flat grey square: no grain
    m, base = stats.map(odd), stats.map(normal[:2])
    assert (m[:, 10, 10] > 5 * base[:, 10, 10].clamp_min(1.0)).all()
    assert torch.allclose(m[:, 22:, 22:], base[:, 22:, 22:])  # beyond the kernel radius 8


def test_bad_use_is_a_one_line_error():
    with pytest.raises(ReconadError, match="not fitted"):
        ColorStats([2.0]).map(torch.rand(1, 3, 8, 8))
    with pytest.raises(ReconadError, match="scales > 0"):
        local_stats(torch.rand(1, 3, 8, 8), [0.0])
    with pytest.raises(ReconadError, match="need normal images"):
        ColorStats([2.0]).fit([])
    with pytest.raises(ReconadError, match="fitted on 3"):
        ColorStats([2.0]).fit([torch.rand(2, 3, 8, 8)]).map(torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------- in the product (score.map)

IMAGES = RNG.uniform(0, 1, (24, 3, 16, 16)).astype(np.float32)
VAL = RNG.uniform(0, 1, (8, 3, 16, 16)).astype(np.float32)


def _fit(score: dict):
    from reconad.detector import Detector

    return Detector(model={"kind": "conv", "channels": [4], "bottleneck": False},
                    train={"epochs": 1, "batch_size": 8},
                    score={"standardize": True, **score}).fit(IMAGES, X_val=VAL)


def test_color_map_is_the_standardised_mahalanobis_map_of_the_training_images():
    det = _fit({"map": "color", "color_sigmas": [1.5], "reduction": "max",
                "smooth_sigma": 1.0})  # the color map is not smoothed again
    stats = ColorStats([1.5]).fit([torch.from_numpy(IMAGES)])  # all training images
    normal = stats.map(torch.from_numpy(VAL)).double()
    mean, std = normal.mean(0), normal.std(0, correction=0)
    std = std.clamp_min(0.1 * float(std.mean()))
    z = ((stats.map(torch.from_numpy(IMAGES[:4])).double() - mean) / std).numpy()
    np.testing.assert_allclose(det.anomaly_maps(IMAGES[:4]), z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(det.anomaly_score(IMAGES[:4]), z.reshape(4, -1).max(1),
                               rtol=1e-4, atol=1e-4)


def test_combined_map_with_color_is_the_mean_of_the_standardised_parts():
    det = _fit({"map": "ssim+squared+color", "ssim_window": 5})
    parts = [_fit({"map": m, "ssim_window": 5} if m == "ssim" else {"map": m}).anomaly_maps(
        IMAGES[:3]) for m in ("ssim", "squared", "color")]  # the same seed: the same model
    np.testing.assert_allclose(det.anomaly_maps(IMAGES[:3]), sum(parts) / 3, rtol=1e-4,
                               atol=1e-4)


def test_maps_run_the_model_once_per_pass_and_not_at_all_for_color_alone(monkeypatch):
    det = _fit({"map": "ssim+squared+color", "ssim_window": 5})
    alone = _fit({"map": "color"})
    calls = []
    for d in (det, alone):
        model = d._whole_image_model()
        monkeypatch.setattr(model, "forward", lambda x, f=model.forward: calls.append(1) or f(x))
    det.anomaly_maps(IMAGES)  # 24 images: one pass
    assert len(calls) == 1
    alone.anomaly_maps(IMAGES)
    assert len(calls) == 1


def test_maps_and_scores_together_run_the_model_once_and_equal_each_alone(monkeypatch):
    det = _fit({"map": "ssim+squared+color", "ssim_window": 5, "reduction": "topk"})
    maps, scores = det.anomaly_maps(IMAGES), det.anomaly_score(IMAGES)
    calls = []
    model = det._whole_image_model()
    monkeypatch.setattr(model, "forward", lambda x, f=model.forward: calls.append(1) or f(x))
    both_maps, both_scores = det.anomaly_maps_and_scores(IMAGES)  # 24 images: one pass
    assert len(calls) == 1
    assert_close(both_maps, maps, "maps")
    assert_close(both_scores, scores, "scores")


def test_save_load_keeps_the_colour_statistics_and_refuses_edits(tmp_path):
    import json

    from safetensors import safe_open

    from reconad.detector import Detector, write_detector_file

    det = _fit({"map": "squared+color", "color_sigmas": [1.0, 3.0]})
    path = det.save(tmp_path / "d.safetensors")
    loaded = Detector.load(path)
    np.testing.assert_allclose(loaded.anomaly_maps(IMAGES[:3]), det.anomaly_maps(IMAGES[:3]),
                               rtol=1e-5, atol=1e-5)
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["reconad"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    for key in ("format", "format_version"):
        header.pop(key)
    key = "reconad.map_colorstats.precision"
    assert tensors[key].shape == (12, 12)  # 2 statistics x 3 channels x 2 scales
    for bad, pattern in ((torch.zeros(11, 11), "needs float32 \\(12, 12\\)"),
                         (torch.full((12, 12), float("nan")), "NaN or infinite"),
                         (None, "precision is missing")):
        edited = {k: v for k, v in tensors.items() if k != key or bad is not None}
        if bad is not None:
            edited[key] = bad
        write_detector_file(tmp_path / "bad.safetensors", header, edited)
        with pytest.raises(ReconadError, match=pattern):
            Detector.load(tmp_path / "bad.safetensors")
    header["score"]["map"] = "squared"
    header["score"]["color_sigmas"] = [1.0, 2.0, 4.0]
    write_detector_file(tmp_path / "bad.safetensors", header, tensors)
    with pytest.raises(ReconadError, match="colour statistics its score does not use"):
        Detector.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(("overrides", "pattern"), [
    (["score.map=ssim+ssim"], "list of distinct maps"),
    (["score.map=colour"], "maps from squared, absolute, ssim, color"),
    (["score.color_sigmas=[1.0]"], "only applies to a color map"),
    (["score.map=color", "score.color_sigmas=[]"], "color_sigmas"),
    (["score.map=squared+color"], "set score.standardize=true"),
])
def test_bad_color_settings_are_one_line_errors(overrides, pattern):
    from reconad.config import load_config

    with pytest.raises(ReconadError, match=pattern) as info:
        load_config("default", ["score.parts=[recon]", *overrides])
    assert "\n" not in str(info.value)

"""Detector: the scikit-learn contract, save/load round trips, damaged files, bad input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from reconad.config import ModelConfig
from reconad.detector import Detector
from reconad.errors import ReconadError

TRAIN = {"epochs": 6, "batch_size": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def split(tiny_images):
    x, y = tiny_images
    return x[y < 3], x, (y == 3)


@pytest.fixture(scope="module")
def fitted(split):
    normal, _, _ = split
    return Detector(model={"kind": "dense", "hidden": [64], "latent": 4}, train=TRAIN).fit(normal)


def test_init_only_stores_arguments():
    det = Detector(model={"kind": "conv"}, score="l1", seed=3)
    assert det.model == {"kind": "conv"} and det.score == "l1" and det.seed == 3
    assert not hasattr(det, "model_") and not hasattr(det, "threshold_")


def test_fit_returns_self_and_sets_fitted_attributes(split):
    normal, _, _ = split
    det = Detector(model=ModelConfig(kind="conv", channels=[8, 16], latent=8),
                   train={"epochs": 1, "batch_size": 64})
    assert det.fit(normal) is det
    assert det.input_shape_ == (1, 16, 16)
    assert det.threshold_method_ == "quantile"
    # The default threshold is the 0.99 quantile of the held-out validation scores.
    assert det.threshold_ == pytest.approx(np.quantile(det.val_scores_, 0.99))


def test_anomalies_score_higher(fitted, split):
    _, x, is_anomaly = split
    scores = fitted.anomaly_score(x)
    assert scores.shape == (len(x),)
    assert roc_auc_score(is_anomaly, scores) > 0.95


def test_flag_is_score_above_threshold(fitted, split):
    _, x, _ = split
    np.testing.assert_array_equal(fitted.flag(x),
                                  (fitted.anomaly_score(x) > fitted.threshold_).astype(int))


def test_reconstruction_and_error_maps_have_image_shapes(fitted, split):
    _, x, _ = split
    assert fitted.reconstruct(x[:5]).shape == (5, 1, 16, 16)
    maps = fitted.error_maps(x[:5])
    assert maps.shape == (5, 16, 16)
    # For mse the per-image score is the mean of the per-pixel squared error map.
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), fitted.anomaly_score(x[:5]), rtol=1e-5)


def test_uint8_and_three_dimensional_inputs_are_accepted(fitted, split):
    _, x, _ = split
    as_uint8 = np.round(x[:, 0] * 255).astype(np.uint8)  # (N, H, W)
    np.testing.assert_allclose(fitted.anomaly_score(as_uint8),
                               fitted.anomaly_score(as_uint8.astype(np.float32)[:, None] / 255),
                               rtol=1e-6)


def test_same_seed_same_scores(split):
    normal, x, _ = split
    a = Detector(train={"epochs": 1}, seed=5).fit(normal).anomaly_score(x)
    b = Detector(train={"epochs": 1}, seed=5).fit(normal).anomaly_score(x)
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip_scores_alone(fitted, split, tmp_path):
    _, x, _ = split
    fitted.set_threshold(0.0123, "youden")
    path = fitted.save(tmp_path / "det.safetensors")
    loaded = Detector.load(path)
    np.testing.assert_array_equal(loaded.anomaly_score(x), fitted.anomaly_score(x))
    assert (loaded.threshold_, loaded.threshold_method_) == (0.0123, "youden")
    assert loaded.input_shape_ == fitted.input_shape_
    assert not list(tmp_path.glob(".*partial*"))


def test_loading_never_needs_pickle(fitted, tmp_path):
    path = fitted.save(tmp_path / "det.safetensors")
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    meta = json.loads(header["__metadata__"]["reconad"])
    assert meta["model"]["hidden"] == [64] and meta["input_shape"] == [1, 16, 16]
    assert b"pickle" not in path.read_bytes() and b"\x80\x04" not in path.read_bytes()[:2]


def test_truncated_detector_is_rejected(fitted, tmp_path):
    path = fitted.save(tmp_path / "det.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ReconadError, match=r"det.safetensors is damaged or was edited"):
        Detector.load(path)


def test_edited_weights_are_rejected(fitted, tmp_path):
    path = fitted.save(tmp_path / "det.safetensors")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ReconadError, match="weights do not match their checksum"):
        Detector.load(path)


def test_edited_header_is_rejected(fitted, tmp_path):
    path = fitted.save(tmp_path / "det.safetensors")
    data = path.read_bytes().replace(b'\\"hidden\\": [64]', b'\\"hidden\\": [65]')
    assert data != path.read_bytes()
    path.write_bytes(data)
    with pytest.raises(ReconadError, match="damaged or was edited"):
        Detector.load(path)


def test_not_a_detector_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_text("hello")
    with pytest.raises(ReconadError, match="damaged or was edited"):
        Detector.load(path)
    with pytest.raises(ReconadError, match="does not exist"):
        Detector.load(tmp_path / "absent.safetensors")


def test_unfitted_detector_says_so():
    with pytest.raises(ReconadError, match="not fitted yet"):
        Detector().flag(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ReconadError, match="not fitted yet"):
        Detector().predict(np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize(("images", "message"), [
    (np.zeros((2, 1, 20, 20), np.float32), r"trained on \(1, 16, 16\); resize them to 16x16"),
    (np.full((2, 1, 16, 16), np.nan, np.float32), "512 NaN or infinite pixels"),
    (np.full((2, 1, 16, 16), 3.0, np.float32), r"outside \[0, 1\].*divide 8-bit images by 255"),
    (np.zeros((0, 1, 16, 16), np.float32), "non-empty array"),
    (np.zeros((16, 16), np.float32), r"shape \(N, H, W\) or \(N, C, H, W\)"),
])
def test_bad_images_are_named(fitted, images, message):
    with pytest.raises(ReconadError, match=message):
        fitted.anomaly_score(images)


def test_invalid_settings_are_reported_at_fit(split):
    normal, _, _ = split
    with pytest.raises(ReconadError, match="invalid train.epochs"):
        Detector(train={"epochs": 0}).fit(normal)
    with pytest.raises(ReconadError, match="invalid model.kind"):
        Detector(model={"kind": "transformer"}).fit(normal)
    with pytest.raises(ReconadError, match="quantile must be between 0 and 1"):
        Detector(quantile=1.5).fit(normal)

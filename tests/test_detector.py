"""Detector: the scikit-learn contract, save/load round trips, damaged files, bad input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tolerances import assert_close

from reconad.config import ModelConfig, TrainConfig
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
    assert_close(maps.mean(axis=(1, 2)), fitted.anomaly_score(x[:5]), what="mean of the error map")


def test_uint8_and_three_dimensional_inputs_are_accepted(fitted, split):
    _, x, _ = split
    as_uint8 = np.round(x[:, 0] * 255).astype(np.uint8)  # (N, H, W)
    assert_close(fitted.anomaly_score(as_uint8),
                 fitted.anomaly_score(as_uint8.astype(np.float32)[:, None] / 255),
                 what="uint8 vs float32 scores")


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
    (np.full((2, 1, 16, 16), np.nan, np.float32), "512 pixel values of images are NaN or infinite"),
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


# ---------------------------------------------------------------- scikit-learn's contract


def test_sklearn_signs_negate_the_anomaly_score(fitted, split):
    _, x, is_anomaly = split
    anomaly = fitted.anomaly_score(x)
    np.testing.assert_array_equal(fitted.score_samples(x), -anomaly)  # lower = more abnormal
    assert fitted.offset_ == -fitted.threshold_
    decision = fitted.decision_function(x)
    np.testing.assert_allclose(decision, fitted.threshold_ - anomaly, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fitted.predict(x), np.where(anomaly > fitted.threshold_, -1, 1))
    np.testing.assert_array_equal(fitted.predict(x) == -1, decision < 0)
    assert set(np.unique(fitted.predict(x))) <= {-1, 1}
    assert roc_auc_score(is_anomaly, -fitted.score_samples(x)) > 0.95


def test_get_params_set_params_and_clone():
    from sklearn.base import clone

    det = Detector(model={"kind": "dense", "latent": 3}, score="l1", seed=4)
    params = det.get_params()
    assert params["model"] == {"kind": "dense", "latent": 3} and params["seed"] == 4
    assert set(params) == {"model", "loss", "train", "score", "quantile", "val_fraction",
                           "seed", "progress", "device"}
    assert det.set_params(seed=9, quantile=0.9) is det and det.get_params()["seed"] == 9
    twin = clone(det)
    assert twin is not det and twin.get_params() == det.get_params()
    assert twin.model is not det.model  # deep-copied, not shared
    with pytest.raises(ValueError, match="Invalid parameter"):
        det.set_params(epochs=3)


def test_clone_of_a_fitted_detector_is_unfitted(fitted):
    from sklearn.base import clone

    twin = clone(fitted)
    assert not hasattr(twin, "model_") and twin.get_params() == fitted.get_params()


def test_a_parameter_grid_search_picks_the_better_latent_size(split):
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid

    normal, x, is_anomaly = split
    base = Detector(train={"epochs": 3, "batch_size": 32, "lr": 3e-3}, seed=1)
    grid = ParameterGrid({"model": [{"kind": "dense", "hidden": [32], "latent": 1},
                                    {"kind": "dense", "hidden": [32], "latent": 8}]})
    results = []
    for params in grid:
        det = clone(base).set_params(**params).fit(normal)
        results.append((roc_auc_score(is_anomaly, det.anomaly_score(x)), params, det))
    best_auroc, best_params, best = max(results, key=lambda r: r[0])
    assert best_auroc == max(r[0] for r in results)
    assert best.get_params()["model"] == best_params["model"]
    assert best.model_.code_shape == (best_params["model"]["latent"],)
    assert best_auroc > 0.9


# ---------------------------------------------------------------- fitted state, scoring


def _fitted_state(det):
    return {k: v for k, v in vars(det).items() if k.endswith("_") and not k.startswith("_")}


def test_fit_and_load_give_the_same_fitted_attributes(tiny_images, tmp_path):
    x, y = tiny_images
    det = Detector(model={"hidden": [32], "latent": 4}, train={"epochs": 2},
                   score={"parts": ["recon", "latent_knn"], "knn_bank": 100}).fit(
        x[y < 3], preprocessing={"resize": [16, 16], "grayscale": True})
    loaded = Detector.load(det.save(tmp_path / "det.safetensors"))
    fit_state, load_state = _fitted_state(det), _fitted_state(loaded)
    assert set(fit_state) == set(load_state) == {
        "model_", "input_shape_", "image_shape_", "config_", "scorer_", "classes_", "history_",
        "val_scores_", "threshold_", "threshold_method_", "preprocessing_", "device_"}
    for key in ("input_shape_", "image_shape_", "config_", "classes_", "history_", "threshold_",
                "threshold_method_", "preprocessing_", "device_"):
        assert load_state[key] == fit_state[key], key
    assert loaded.preprocessing_ == {"resize": [16, 16], "grayscale": True}
    np.testing.assert_array_equal(loaded.val_scores_, det.val_scores_)
    assert loaded.scorer_.config == det.scorer_.config
    assert loaded.scorer_.calibration == det.scorer_.calibration
    assert torch.equal(loaded.scorer_.bank, det.scorer_.bank)
    for (ka, a), (kb, b) in zip(sorted(loaded.model_.state_dict().items()),
                                sorted(det.model_.state_dict().items()), strict=True):
        assert ka == kb and torch.equal(a, b)
    # The constructor arguments come back resolved (defaults filled in): clone(loaded) refits
    # the same way.
    resolved = {"model": det.config_["model"], "loss": det.config_["loss"],
                "score": det.scorer_.config.model_dump(mode="json"),
                "train": TrainConfig(epochs=2).model_dump(mode="json")}
    assert loaded.get_params() == {**det.get_params(), **resolved}


def test_fit_refuses_validation_images_given_as_labels(split):
    normal, _, _ = split
    with pytest.raises(ReconadError, match="X_val=images"):
        Detector(train={"epochs": 1}).fit(normal, normal[:10])


@pytest.mark.parametrize("model", [{"kind": "dense", "hidden": [32], "latent": 4},
                                   {"kind": "conv", "channels": [4, 8], "latent": 4,
                                    "members": 2}])
def test_scores_do_not_depend_on_the_batch_size(tiny_images, model):
    """Regression: an image scored alone got another score than in a batch (issue 10.3)."""
    x, y = tiny_images
    det = Detector(model=model, train={"epochs": 1},
                   score={"parts": ["recon", "latent_knn"], "knn_k": 3}).fit(x[y < 3])
    many = np.concatenate([x, x[:, :, ::-1]])[:700]  # 700 images
    whole = det.anomaly_score(many)
    for batch in (1, 7, 512):
        n = 42 if batch < 512 else len(many)  # alone and by 7: the first 42 images suffice
        parts = np.concatenate([det.anomaly_score(many[i : i + batch])
                                for i in range(0, n, batch)])
        # Explicit tolerance: float32 sums may differ across CPUs (shared helper at merge).
        np.testing.assert_allclose(parts, whole[:n], rtol=1e-4, atol=1e-5)

"""Composite scores: class head, latent kNN, class energy, calibration, save/load, bad setups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tolerances import assert_close

from reconad.config import ModelConfig, ScoreConfig, load_config
from reconad.detector import Detector
from reconad.errors import ReconadError
from reconad.models import build_model
from reconad.score import BANK_KEY, KNN_SHORTLIST, Calibration, Scorer, latent_codes, score_images
from reconad.transforms import tta_views

TRAIN = {"epochs": 8, "batch_size": 32, "lr": 3e-3}
MODEL = {"kind": "dense", "hidden": [64], "latent": 6, "class_head": True}
PARTS = {"parts": ["recon", "latent_knn", "class_energy"], "knn_k": 3, "knn_bank": 150}


@pytest.fixture(scope="module")
def data(tiny_images):
    """Classes 0-2 are normal (with their labels), class 3 is the anomaly."""
    x, y = tiny_images
    normal = y < 3
    return x[normal], y[normal] + 10, x, y == 3  # labels 10..12: any integers work


@pytest.fixture(scope="module")
def fitted(data):
    x, y, _, _ = data
    return Detector(model=MODEL, train=TRAIN, score=PARTS).fit(x, y=y)


def test_parts_match_their_definitions(fitted, data):
    _, _, x_all, _ = data
    model = fitted.model_
    parts = fitted.score_parts(x_all)
    assert_close(parts["recon"], score_images(model, x_all, "mse"), what="recon part")
    # latent_knn: brute-force mean distance to the 3 nearest bank codes.
    codes = latent_codes(model, x_all).double().numpy()
    bank = fitted.scorer_.bank.double().numpy()
    dist = np.sqrt(((codes[:, None, :] - bank[None]) ** 2).sum(-1))
    np.testing.assert_allclose(parts["latent_knn"], np.sort(dist, 1)[:, :3].mean(1), rtol=1e-4)
    with torch.no_grad():
        logits = model.class_head(model.encode(torch.from_numpy(x_all))).double().numpy()
    energy = -np.log(np.exp(logits).sum(1))
    assert_close(parts["class_energy"], energy, what="class energy")


def test_bank_is_a_seeded_sample_of_the_training_codes(fitted, data):
    assert fitted.scorer_.bank.shape == (150, 6)
    assert fitted.classes_ == [10, 11, 12]


def test_class_head_learns_the_normal_classes(fitted, data):
    x, y, _, _ = data
    with torch.no_grad():
        logits = fitted.model_.class_head(fitted.model_.encode(torch.from_numpy(x)))
    predicted = np.asarray(fitted.classes_)[logits.argmax(1).numpy()]
    assert (predicted == y).mean() > 0.9


def test_combined_score_is_the_sum_of_standardised_parts(fitted, data):
    _, _, x_all, is_anomaly = data
    parts = fitted.score_parts(x_all)
    cal = fitted.scorer_.calibration
    expected = ((np.log(parts["recon"]) - cal.mean["recon"]) / cal.std["recon"]
                + (np.log(parts["latent_knn"]) - cal.mean["latent_knn"]) / cal.std["latent_knn"]
                + (parts["class_energy"] - cal.mean["class_energy"]) / cal.std["class_energy"])
    scores = fitted.anomaly_score(x_all)
    assert_close(scores, expected, what="combined score")
    assert roc_auc_score(is_anomaly, scores) > 0.95
    # Calibrated on the validation normals: their standardised parts have mean 0 and std 1.
    assert fitted.threshold_ == pytest.approx(np.quantile(fitted.val_scores_, 0.99))


def test_calibration_standardises_each_part():
    rng = np.random.default_rng(0)
    parts = {"recon": rng.lognormal(-4, 0.5, 1000), "class_energy": rng.normal(-3, 2, 1000)}
    cal = Calibration.fit(parts)
    assert cal.mean["recon"] == pytest.approx(-4, abs=0.05)
    assert cal.std["class_energy"] == pytest.approx(2, abs=0.15)
    combined = cal.combine(parts)
    assert combined.mean() == pytest.approx(0, abs=1e-9)
    assert combined.std() == pytest.approx(np.sqrt(2), abs=0.15)  # two nearly independent parts


def test_one_part_alone_is_its_raw_value(data):
    x, _, x_all, _ = data
    det = Detector(model={"hidden": [32], "latent": 4}, train={"epochs": 2},
                   score={"parts": ["latent_knn"], "knn_k": 2}).fit(x)
    assert det.scorer_.calibration is None
    np.testing.assert_array_equal(det.anomaly_score(x_all), det.score_parts(x_all)["latent_knn"])


def test_save_load_keeps_bank_classes_and_calibration(fitted, data, tmp_path):
    _, _, x_all, _ = data
    path = fitted.save(tmp_path / "det.safetensors")
    loaded = Detector.load(path)
    np.testing.assert_array_equal(loaded.anomaly_score(x_all), fitted.anomaly_score(x_all))
    assert loaded.classes_ == [10, 11, 12]
    assert torch.equal(loaded.scorer_.bank, fitted.scorer_.bank)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert BANK_KEY in handle.keys()


def test_class_head_without_labels_is_refused(data):
    x, y, _, _ = data
    with pytest.raises(ReconadError, match=r"needs the training images' class labels"):
        Detector(model=MODEL, train={"epochs": 1}).fit(x)
    with pytest.raises(ReconadError, match="class labels must be 300 integers"):
        Detector(model=MODEL, train={"epochs": 1}).fit(x, y=y[:10])
    with pytest.raises(ReconadError, match="at least two labelled classes"):
        Detector(model=MODEL, train={"epochs": 1}).fit(x, y=np.zeros(len(x), int))


def test_class_energy_needs_a_class_head(data):
    x, _, _, _ = data
    with pytest.raises(ReconadError, match="class_energy needs model.class_head=true"):
        Detector(score={"parts": ["recon", "class_energy"]}).fit(x)
    with pytest.raises(ReconadError, match="class_energy needs model.class_head=true"):
        load_config("default", ["model.class_head=false", "score.parts=[class_energy]"])
    with pytest.raises(ReconadError, match="names a part twice"):
        load_config("default", ["score.parts=[recon,recon]"])


def test_conv_class_head_sits_on_the_code():
    model = build_model(ModelConfig(kind="conv", channels=[4, 8], latent=5, class_head=True),
                        (1, 16, 16), n_classes=3)
    logits = model.class_head(model.encode(torch.zeros(2, 1, 16, 16)))
    assert logits.shape == (2, 3)


def test_pipeline_refuses_a_class_head_on_an_unlabelled_pool(mnist_dir, tmp_path):
    cfg = load_config("contamination-1-3", ["data.max_train=600", "data.max_test=400",
                                            f"data.data_dir={mnist_dir}", "model.class_head=true"])
    from reconad.pipeline import run

    with pytest.raises(ReconadError, match="contamination scenario trains on unlabelled pool"):
        run(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def _knn_oracle(codes: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Brute force in float64: mean distance to the k nearest bank codes."""
    dist = np.sqrt(((codes[:, None, :].astype(np.float64) - bank[None].astype(np.float64))
                    ** 2).sum(-1))
    return np.sort(dist, axis=1)[:, :k].mean(1)


@pytest.mark.parametrize("k", [1, 3, 40])
def test_knn_distance_matches_a_float64_brute_force_oracle(monkeypatch, k):
    import reconad.score._knn as scoring

    # Small blocks so that queries and bank are both split into several (memory bound).
    monkeypatch.setattr(scoring, "KNN_QUERIES", 16)
    monkeypatch.setattr(scoring, "KNN_BANK_CHUNK", 50)
    monkeypatch.setattr(scoring, "KNN_GROUP", 3)  # the grouped search runs where k is small
    rng = np.random.default_rng(k)
    bank = rng.normal(5.0, 1.0, (230, 12)).astype(np.float32)  # offset: |a|^2 >> |a - b|^2
    near = bank[:20] + rng.normal(0, 1e-4, (20, 12)).astype(np.float32)  # tiny distances
    far = rng.normal(5.0, 1.0, (37, 12)).astype(np.float32)
    codes = np.concatenate([near, far, bank[20:23]])  # and exact duplicates (distance 0)
    got = scoring.knn_distance(torch.from_numpy(codes), torch.from_numpy(bank), k)
    assert got.dtype == np.float64 and got.shape == (len(codes),)
    np.testing.assert_allclose(got, _knn_oracle(codes, bank, k), rtol=1e-5, atol=1e-6)
    if k == 1:  # small distances stay accurate (the matmul form alone loses them)
        np.testing.assert_allclose(got[:20], _knn_oracle(near, bank, 1), rtol=1e-3)
        assert np.all(got[-3:] == 0.0)


@pytest.mark.parametrize(("width", "n", "group"), [(1000, 13, 32), (999, 5, 7), (64, 3, 32),
                                                   (50, 13, 4)])
def test_smallest_finds_what_topk_finds(width, n, group):
    from reconad.score import smallest

    rng = np.random.default_rng(width)
    values = torch.from_numpy(rng.normal(size=(40, width)).astype(np.float32))
    values[:5] = values[:5].round()  # many ties
    values[5, : n + 3] = -10.0  # the smallest all in one group
    found, columns = smallest(values, n, group)
    expect = values.topk(n, dim=1, largest=False).values
    assert torch.equal(found, expect)
    assert torch.equal(values.gather(1, columns), found)  # the columns hold those values
    assert all(len(set(row.tolist())) == n for row in columns)  # n distinct columns


def test_knn_distance_with_k_above_the_bank_size_uses_the_whole_bank():
    from reconad.score import knn_distance

    rng = np.random.default_rng(0)
    bank, codes = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    got = knn_distance(torch.from_numpy(codes).float(), torch.from_numpy(bank).float(), 10)
    np.testing.assert_allclose(got, _knn_oracle(codes, bank, 4), rtol=1e-5)


def test_scorer_rules_live_in_one_place(fitted):
    from reconad.config import ScoreConfig
    from reconad.score import Scorer

    header = fitted.scorer_.to_header()
    assert header["calibration"]["mean"] == fitted.scorer_.calibration.mean
    assert Scorer(ScoreConfig(parts=["recon", "latent_knn"])).calibrated
    assert not Scorer(ScoreConfig(parts=["latent_knn"])).calibrated
    no_head = build_model(ModelConfig(hidden=[8], latent=2), (1, 16, 16))
    with pytest.raises(ReconadError, match="class_energy needs model.class_head=true"):
        Scorer(ScoreConfig(parts=["class_energy"])).check_model(no_head)


def test_test_time_augmentation_averages_each_part_over_the_copies(data):
    """score.tta_*: each part is the mean over the image and its copies (geometric for the
    distances), the calibration is fitted on those means, and a saved detector keeps it."""
    x, y, x_all, is_anomaly = data
    tta = {**PARTS, "tta_shift": 1 / 16, "tta_rotation": 8.0}  # 1 pixel of the 16x16 images
    det = Detector(model=MODEL, train=TRAIN, score=tta).fit(x[40:], y=y[40:], X_val=x[:40])
    plain = Scorer(ScoreConfig(**PARTS), bank=det.scorer_.bank)  # the same bank and model
    views = tta_views(torch.from_numpy(x_all.astype(np.float32)), 1 / 16, 8.0)
    per_view = [plain.parts(det.model_, v.numpy()) for v in views]
    assert len(per_view) == 11
    parts = det.score_parts(x_all)
    want = np.exp(np.mean([np.log(p["recon"]) for p in per_view], axis=0))
    assert_close(parts["recon"], want, what="recon over the copies")
    # latent_knn: the image's own distance to the whole bank; each copy's to its nearest among
    # the image's KNN_SHORTLIST nearest bank codes (brute force in float64).
    bank = det.scorer_.bank.double().numpy()
    codes = [latent_codes(det.model_, v.numpy()).double().numpy() for v in views]
    own = np.sqrt(((codes[0][:, None] - bank[None]) ** 2).sum(-1))
    shortlist = np.argsort(own, axis=1)[:, :KNN_SHORTLIST]
    distances = [np.sort(own, 1)[:, :3].mean(1)]
    for c in codes[1:]:
        d = np.sqrt(((c[:, None] - bank[shortlist]) ** 2).sum(-1))
        distances.append(np.sort(d, 1)[:, :3].mean(1))
    want = np.exp(np.mean(np.log(distances), axis=0))
    np.testing.assert_allclose(parts["latent_knn"], want, rtol=1e-4)
    assert np.all(np.array(distances[1:]) >= np.array([p["latent_knn"] for p in per_view[1:]])
                  * (1 - 1e-4))  # never nearer than the whole bank's nearest
    want = np.mean([p["class_energy"] for p in per_view], axis=0)
    assert_close(parts["class_energy"], want, what="class energy over the copies")
    assert not np.allclose(parts["recon"], per_view[0]["recon"], rtol=1e-3)
    # The calibration is of the averaged parts of the validation images.
    val_parts = det.score_parts(x[:40])
    for part in ("recon", "latent_knn"):
        assert_close(det.scorer_.calibration.mean[part], np.log(val_parts[part]).mean(),
                     what=f"{part} calibration")
    assert roc_auc_score(is_anomaly, det.anomaly_score(x_all)) > 0.8


def test_test_time_augmentation_survives_save_and_load(data, tmp_path):
    x, y, x_all, _ = data
    det = Detector(model=MODEL, train=TRAIN, score={**PARTS, "tta_rotation": 5.0}).fit(x, y=y)
    loaded = Detector.load(det.save(tmp_path / "d.safetensors"))
    assert loaded.scorer_.config.tta_rotation == 5.0
    assert_close(loaded.anomaly_score(x_all), det.anomaly_score(x_all), what="loaded scores")


def test_test_time_augmentation_is_refused_with_a_map_score():
    with pytest.raises(ValueError, match="tta_shift/tta_rotation/tta_zoom"):
        ScoreConfig(map="ssim", tta_shift=0.05)

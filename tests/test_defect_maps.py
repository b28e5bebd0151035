"""Anomaly maps in the product: map scores through the Detector, crops and tiles, the detector
file, a generated MVTec tree through `reconad run`, `reconad score --maps`, bad combinations."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from tolerances import assert_close

from reconad.config import load_config
from reconad.detector import Detector
from reconad.errors import ReconadError
from reconad.models import TiledAutoencoder
from reconad.score import reconstruct, reduce_map

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 1, (24, 1, 16, 16)).astype(np.float32)
VAL = RNG.uniform(0, 1, (8, 1, 16, 16)).astype(np.float32)
FAST = {"epochs": 1, "batch_size": 8}
FCN = {"kind": "conv", "channels": [4], "bottleneck": False}


def _fit(score: dict, model: dict | None = None, train: dict | None = None) -> Detector:
    return Detector(model=model or FCN, train={**FAST, **(train or {})},
                    score=score).fit(IMAGES, X_val=VAL)


def _oracle_maps(det: Detector, x: np.ndarray, kind: str) -> np.ndarray:
    residual = x - det.reconstruct(x).astype(np.float64)
    return (residual ** 2 if kind == "squared" else np.abs(residual)).mean(axis=1)


@pytest.mark.parametrize("reduction", ["mean", "max", "topk"])
@pytest.mark.parametrize("kind", ["squared", "absolute"])
def test_map_score_reductions_match_numpy(kind, reduction):
    det = _fit({"map": kind, "reduction": reduction, "topk": 0.05})
    maps = _oracle_maps(det, IMAGES[:5], kind).reshape(5, -1)
    k = math.ceil(0.05 * 256)  # 13 pixels
    expected = {"mean": maps.mean(1), "max": maps.max(1),
                "topk": np.sort(maps, axis=1)[:, ::-1][:, :k].mean(1)}[reduction]
    assert_close(det.anomaly_score(IMAGES[:5]), expected, f"{kind} {reduction} score")
    assert_close(det.anomaly_maps(IMAGES[:5]).reshape(5, -1), maps, "maps")


@pytest.mark.parametrize("n", [513, 514])  # two passes of 256 and a lone image, or two
def test_map_scores_reduced_pass_by_pass_equal_the_whole_stack(n):
    det = _fit({"map": "squared", "reduction": "mean", "standardize": True})
    x = np.repeat(IMAGES, math.ceil(n / len(IMAGES)), axis=0)[:n]
    whole = reduce_map(torch.from_numpy(det.anomaly_maps(x)), "mean").double().numpy()
    np.testing.assert_array_equal(det.anomaly_score(x), whole)


def test_standardised_map_matches_numpy():
    det = _fit({"map": "squared", "reduction": "max", "standardize": True})
    normal = _oracle_maps(det, VAL, "squared")
    mean, std = normal.mean(0), normal.std(0)
    std = np.maximum(std, 0.1 * std.mean())
    z = (_oracle_maps(det, IMAGES[:4], "squared") - mean) / std
    assert_close(det.anomaly_maps(IMAGES[:4]), z, "standardised maps")
    assert_close(det.anomaly_score(IMAGES[:4]), z.reshape(4, -1).max(1), "max of z")
    assert_close(det.threshold_, np.quantile(det.val_scores_, 0.99), "threshold")


def test_crop_model_scores_whole_images_and_tiles_agree():
    # kernel 1, stride-2 stages: each output pixel depends on its own 2x2 cell only, so tiles
    # aligned to that grid reconstruct exactly what the whole-image model does.
    det = _fit({"map": "squared"}, {**FCN, "kernel": 1}, {"crop": 8})
    assert det.model_.input_shape == (1, 8, 8) and det.image_shape_ == (1, 16, 16)
    whole = det.reconstruct(IMAGES[:3])
    tiled = reconstruct(TiledAutoencoder(det.model_), IMAGES[:3])
    assert_close(tiled, whole, "tiled vs whole reconstruction")


def test_dense_crop_model_is_applied_by_tiles():
    det = _fit({"map": "absolute"}, {"kind": "dense", "hidden": [8], "latent": 4}, {"crop": 8})
    x = IMAGES[:2]
    total, count = np.zeros_like(x), np.zeros_like(x)
    with torch.no_grad():
        for top in (0, 4, 8):
            for left in (0, 4, 8):
                tile = torch.from_numpy(x[:, :, top:top + 8, left:left + 8])
                total[:, :, top:top + 8, left:left + 8] += det.model_(tile).numpy()
                count[:, :, top:top + 8, left:left + 8] += 1
    assert_close(det.reconstruct(x), total / count, "tile-averaged reconstruction")
    assert_close(det.anomaly_maps(x), np.abs(x - total / count).mean(1), "map of the tiles")


def test_save_load_keeps_maps_and_normalizer(tmp_path):
    det = _fit({"map": "ssim", "ssim_window": 5, "smooth_sigma": 1.0, "standardize": True,
                "reduction": "topk"}, train={"crop": 8})
    loaded = Detector.load(det.save(tmp_path / "d.safetensors"))
    assert loaded.image_shape_ == (1, 16, 16) and loaded.input_shape_ == (1, 8, 8)
    assert_close(loaded.anomaly_maps(IMAGES[:3]), det.anomaly_maps(IMAGES[:3]), "maps")
    assert_close(loaded.anomaly_score(IMAGES[:3]), det.anomaly_score(IMAGES[:3]), "scores")
    assert torch.equal(loaded.scorer_.normalizers["ssim"].std_,
                       det.scorer_.normalizers["ssim"].std_)


def test_edited_map_statistics_are_refused(tmp_path):
    from safetensors import safe_open

    from reconad.detector import write_detector_file

    path = _fit({"map": "squared", "standardize": True}).save(tmp_path / "d.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["reconad"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    for key in ("format", "format_version"):
        header.pop(key)
    tensors["reconad.map_std.squared"] = torch.zeros(16, 16)
    write_detector_file(tmp_path / "bad.safetensors", header, tensors)
    with pytest.raises(ReconadError, match="map_std.squared has values <= 0"):
        Detector.load(tmp_path / "bad.safetensors")
    del tensors["reconad.map_std.squared"]
    write_detector_file(tmp_path / "bad2.safetensors", header, tensors)
    with pytest.raises(ReconadError, match="map_std.squared is missing"):
        Detector.load(tmp_path / "bad2.safetensors")


@pytest.mark.parametrize(("overrides", "pattern"), [
    (["score.reduction=max"], "only apply to an anomaly map; set score.map"),
    (["score.map=ssim", "score.parts=[recon,latent_knn]"], "use score.parts=\\[recon\\]"),
    (["score.map=ssim", "score.ssim_window=4"], "must be odd"),
    (["train.crop=16", "score.parts=[recon,latent_knn]"], "train.crop scores whole images"),
    (["train.crop=16", "train.trim=0.01", "score.parts=[recon]", "model.class_head=false"],
     "set train.trim=0 or train.crop=null"),
])
def test_bad_combinations_are_one_line_errors(overrides, pattern):
    with pytest.raises(ReconadError, match=pattern) as info:
        load_config("default", overrides)
    assert "\n" not in str(info.value)


def test_crop_larger_than_images_is_refused():
    with pytest.raises(ReconadError, match="train.crop=32 is larger than the 16x16 images"):
        _fit({}, train={"crop": 32})


# defects-ssim on the generated gravel set below (one epoch of a 4-4 channel model), seed 0.
# Observed with training seeds 0, 1, 2: pixel AUROC 0.920 / 0.929 / 0.932, PRO 0.807 / 0.821 /
# 0.835, and on every defective image the mean map inside the defect above the mean outside
# (smallest margin, a missing piece: 1.5 / 3.1 / 2.7). The floors lie 0.07 and 0.15 below the
# lowest. Maps that are not where the defects are miss them (seed 0): flipped left-right 0.72 /
# 0.33, upside down 0.57 / 0.31, transposed 0.73 / 0.41, another image's 0.64 / 0.27, random
# 0.56 / 0.14, negated 0.08 / 0.00; the test checks all but the random ones on its own maps.
# An untrained model (lr 1e-9) gives the same numbers to 3 decimals, and so do 5 epochs (30 of
# batch 4, 16-16 channels: 0.908 / 0.793, untrained 0.924 / 0.815): on this set the model-free
# colour statistics (score.map's "color") carry the localisation, and the reconstruction maps
# alone (ssim+squared) reach only 0.82 / 0.66, trained or not. These floors check where the
# maps point, not the training (tests/test_pipeline.py and tests/test_conv_rgb.py do that).
# On brick the same budget misses the flat 4x4 missing piece of this set (the map is lower
# inside it on all three seeds): missing pieces are the recipe's weak kind (RESULTS.md).
PIXEL_AUROC_FLOOR, PRO_FLOOR = 0.85, 0.65


@pytest.fixture(scope="module")
def defect_run(tmp_path_factory):
    from reconad import pipeline
    from reconad.data import make_defect_dataset

    tmp = tmp_path_factory.mktemp("defects")
    root = make_defect_dataset(tmp / "gravel", "gravel", n_train=30, n_test_good=6,
                               n_test_defect=6, size=32, seed=0)
    config = load_config("defects-ssim", [
        f"data.source={root}", "train.epochs=1", "model.channels=[4,4]", "train.crop=16",
        "scenario.val_fraction=0.2"])
    pipeline.run(config, tmp / "run", progress=False)
    return root, tmp / "run"


def test_generated_mvtec_tree_through_reconad_run(defect_run):
    _, run = defect_run
    metrics = json.loads((run / "metrics.json").read_text())
    loc = metrics["eval"]["localization"]
    for key in ("pixel_auroc", "pro"):
        assert 0.0 <= loc[key] <= 1.0, key
        for kind in ("blot", "color", "missing", "scratch"):
            assert 0.0 <= loc["groups"][kind][key] <= 1.0, (kind, key)
    assert loc["n_images"] == 12 and loc["n_regions"] >= 6
    # dev = the normal validation images only: no defect pixels, no pixel metrics
    assert metrics["dev"]["n_anomaly"] == 0 and metrics["dev"]["localization"]["pro"] is None
    assert metrics["chosen_threshold"] == "quantile"
    assert (run / "plots" / "overlays.png").is_file()
    assert "Defect localisation" in (run / "report.html").read_text()


def test_run_localization_equals_the_exact_metrics_of_the_whole_stack(defect_run, monkeypatch):
    """metrics.json's numbers, counted batch by batch, against the exact functions on all the
    eval maps at once; then in batches of 4 maps with thresholds from the first batch."""
    from sklearn.metrics import roc_auc_score

    from reconad import pipeline
    from reconad.data import load_dataset
    from reconad.evaluation import pro_score
    from reconad.scenarios import make_splits

    _, run = defect_run
    config = load_config(run / "config.yaml")
    written = json.loads((run / "metrics.json").read_text())["eval"]["localization"]
    detector = Detector.load(run / "detector.safetensors")
    dataset = load_dataset(config.data, config.seed)
    s = make_splits(dataset, config.scenario, config.seed).sets["eval"]
    maps = detector.anomaly_maps(s.x)  # (12, 32, 32) float32, all at once
    groups = pipeline._kinds(s, dataset.class_names)

    def exact(keep):
        return {"pixel_auroc": roc_auc_score(s.masks[keep].ravel(), maps[keep].ravel()),
                "pro": pro_score(maps[keep], s.masks[keep], n_thresholds=maps.size)}

    monkeypatch.setattr(pipeline, "images_per_pass", lambda shape: 4)
    monkeypatch.setattr(pipeline, "MAP_PIXELS_PER_BATCH", 1)  # batches of 4 maps
    batched = pipeline.localization(detector, s, groups, config.seed)
    for kind in [None, "blot", "color", "missing", "scratch"]:
        keep = np.ones(len(s.masks), bool) if kind is None else np.isin(groups, ["normal", kind])
        want = exact(keep)
        # metrics.json: 12 maps in one batch, every value a threshold: exact
        for got, tolerance in [(written, 1e-9), (batched, 1e-4)]:
            got = got if kind is None else got["groups"][kind]
            for key in ("pixel_auroc", "pro"):
                assert got[key] == pytest.approx(want[key], abs=tolerance), (kind, key)
    assert {k: v for k, v in batched.items() if k not in ("pixel_auroc", "pro", "groups")} == {
        k: v for k, v in written.items() if k not in ("pixel_auroc", "pro", "groups")}


def test_defects_ssim_finds_each_defect_where_it_is(defect_run):
    from reconad.data import read_defect_dataset
    from reconad.evaluation import pixel_auroc, pro_score

    root, run = defect_run
    loc = json.loads((run / "metrics.json").read_text())["eval"]["localization"]
    for key, floor in (("pixel_auroc", PIXEL_AUROC_FLOOR), ("pro", PRO_FLOOR)):
        assert loc[key] >= floor, f"{key} {loc[key]:.3f} is below its floor {floor}"
    data = read_defect_dataset(root)
    test = data.subset(~data.train)
    maps = Detector.load(run / "detector.safetensors").anomaly_maps(test.float_images())
    defective = 0
    for m, mask, name in zip(maps, test.masks, test.ids, strict=True):
        if mask.any():
            defective += 1
            inside, outside = m[mask].mean(), m[~mask].mean()
            assert inside > outside, f"{name}: map {inside:.3g} inside, {outside:.3g} outside"
    assert defective == 6
    # The floors can fail: the same maps negated, or not where the defects are, miss both.
    for wrong in (-maps, maps[:, :, ::-1], maps[:, ::-1], maps.transpose(0, 2, 1),
                  np.roll(maps, 1, axis=0)):
        assert pixel_auroc(wrong, test.masks) < PIXEL_AUROC_FLOOR
        assert pro_score(wrong, test.masks) < PRO_FLOOR


def test_score_maps_writes_one_png_per_image(defect_run, tmp_path):
    from PIL import Image

    root, run = defect_run
    result = subprocess.run(
        [sys.executable, "-m", "reconad", "score", run / "detector.safetensors",
         root / "test" / "scratch", "--out", tmp_path / "s.csv", "--maps", tmp_path / "maps",
         "--batch-size", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    images = sorted(p.name for p in (root / "test" / "scratch").iterdir())
    assert names == images  # 000.png ... named after the ids
    with Image.open(tmp_path / "maps" / names[0]) as png:
        assert png.size == (32, 32) and png.mode == "RGB"


def test_combined_map_is_the_mean_of_standardised_components():
    det = _fit({"map": "ssim+squared", "ssim_window": 5, "standardize": True,
                "reduction": "max"})
    ssim = _fit({"map": "ssim", "ssim_window": 5, "standardize": True})
    squared = _fit({"map": "squared", "standardize": True})  # the same seed: the same model
    expected = (ssim.anomaly_maps(IMAGES[:3]) + squared.anomaly_maps(IMAGES[:3])) / 2
    assert_close(det.anomaly_maps(IMAGES[:3]), expected, "combined map")
    with pytest.raises(ReconadError, match="set score.standardize=true"):
        load_config("default", ["score.map=ssim+absolute", "score.parts=[recon]"])


def test_plain_layout_loads_with_masks_and_splits_the_good_images(tmp_path):
    from PIL import Image

    from reconad.config import DataConfig
    from reconad.data import load_dataset

    for kind, n in (("good", 6), ("scratch", 2)):
        (tmp_path / "images" / kind).mkdir(parents=True)
        (tmp_path / "masks" / kind).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(
                tmp_path / "images" / kind / f"{i}.png")
            if kind != "good":
                mask = np.zeros((8, 8), np.uint8)
                mask[2:4, 2:5] = 255
                Image.fromarray(mask).save(tmp_path / "masks" / kind / f"{i}.png")
    data = load_dataset(DataConfig(source=str(tmp_path), test_fraction=0.5), seed=0)
    assert data.class_names == ("good", "scratch")
    assert data.train_x.shape == (3, 1, 8, 8) and (data.train_y == 0).all()
    assert sorted(data.test_y.tolist()) == [0, 0, 0, 1, 1]
    assert data.masks.shape == (5, 8, 8)
    assert data.masks.sum(axis=(1, 2)).tolist() == [6 if y else 0 for y in data.test_y]

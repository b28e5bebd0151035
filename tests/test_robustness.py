"""The robustness benchmark's collections and judging: shapes, classes, determinism, the kNN
baseline against a brute-force oracle, ranks (benchmarks/robustness.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.common import Context
from benchmarks.robustness import (
    BASELINE,
    _finished,
    cell_key,
    knn_scores,
    rank_entries,
    summarise,
)
from benchmarks.robustness_data import (
    COLLECTIONS,
    MIN_COLOUR_DISTANCE,
    PHOTO_SIDE,
    PHOTOS,
    Collection,
    build,
    colourised,
    crop_corners,
    digits_8x8,
    inverted,
    photo_crops,
    resized,
    write_digits,
)
from reconad.config import load_config
from reconad.data import load_dataset
from reconad.scenarios import make_splits


@pytest.fixture(scope="module")
def grey():
    """12 synthetic 28x28 uint8 'digits': a bright bar at a class-specific row."""
    x = np.zeros((12, 1, 28, 28), np.uint8)
    for i in range(12):
        x[i, 0, 4 + 2 * (i % 4):7 + 2 * (i % 4), 6:22] = 255
    return x


def test_digits_are_sklearns_8x8_scaled_to_grey_levels():
    x, y = digits_8x8()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.uint8
    assert sorted(set(y.tolist())) == list(range(10))
    assert x.max() == 255 and x.min() == 0  # 16 -> 255


def test_digits_folder_has_one_sub_folder_per_digit_and_loads_back(tmp_path):
    overrides = write_digits(tmp_path, quick=True, mnist_dir=None)
    root = tmp_path / "digits"
    assert overrides == [f"data.source={root}"]
    assert sorted(p.name for p in root.iterdir()) == [str(d) for d in range(10)]
    assert sum(1 for _ in root.rglob("*.png")) == 1797
    cfg = load_config("default", [*overrides, "seed=3"])
    data = load_dataset(cfg.data, 3)
    assert data.image_shape == (1, 8, 8)
    x, y = digits_8x8()
    assert len(data.train_x) + len(data.test_x) == 1797
    assert np.array_equal(np.sort(np.concatenate([data.train_x, data.test_x]).sum((1, 2, 3))),
                          np.sort(x.sum((1, 2, 3)).astype(np.int64)))


def test_transforms_of_the_mnist_collections(grey):
    assert np.array_equal(inverted(grey, 0), 255 - grey)
    small, big = resized(14)(grey, 0), resized(56)(grey, 0)
    assert small.shape == (12, 1, 14, 14) and big.shape == (12, 1, 56, 56)
    assert small.dtype == big.dtype == np.uint8
    assert small[:, 0, :, 0].max() == 0 and small.max() > 200  # the bar, not the border


def test_colourised_digits_have_two_distinct_seeded_colours(grey):
    rgb = colourised(grey, 0)
    assert rgb.shape == (12, 3, 28, 28) and rgb.dtype == np.uint8
    rows = 5 + 2 * (np.arange(12) % 4)  # a row through each image's bar
    ink = rgb[np.arange(12), :, rows, 10].astype(float)  # (12, 3)
    paper = rgb[:, :, 0, 0].astype(float)
    assert np.all(np.linalg.norm(ink - paper, axis=1) >= MIN_COLOUR_DISTANCE - 2)  # rounding
    assert len({tuple(c) for c in paper}) == 12  # a colour per image
    assert np.array_equal(colourised(grey, 0), rgb)  # seeded
    assert not np.array_equal(colourised(grey, 1), rgb)  # test images get their own


def test_photo_crops_are_seeded_and_test_crops_never_overlap_training_crops():
    crops = photo_crops(quick=True)
    assert list(crops) == list(PHOTOS)
    for train, test in crops.values():
        assert train.shape == (100, 3, PHOTO_SIDE, PHOTO_SIDE) and test.shape[0] == 40
        assert train.dtype == np.uint8 and train.std() > 0
    again = photo_crops(quick=True)
    assert all(np.array_equal(crops[p][0], again[p][0]) for p in PHOTOS)
    rng = np.random.default_rng(0)
    tops, lefts = crop_corners((3, 300, 451), 500, (0, 210), rng)
    assert tops.min() >= 0 and tops.max() + PHOTO_SIDE <= 210
    tops, lefts = crop_corners((3, 300, 451), 500, (210, 300), rng)
    assert tops.min() >= 210 and tops.max() + PHOTO_SIDE <= 300
    assert lefts.min() >= 0 and lefts.max() + PHOTO_SIDE <= 451


def test_a_complete_collection_is_reused_and_a_stale_one_rebuilt(tmp_path):
    calls = []

    def write(folder, quick, mnist_dir, sources_only=False):
        if not sources_only:
            calls.append(folder)
            (folder / "x.txt").write_text("x")
        return [f"data.source={folder / 'x.txt'}"]

    fake = Collection("fake", "a test collection", write, ["scenario.normal=[1]"])
    got = build(fake, tmp_path, quick=True, mnist_dir=None)
    assert got[0] == f"data.source={tmp_path / 'fake' / 'x.txt'}"
    assert "scenario.kind=holdout" in got and got[-1] == "scenario.normal=[1]"
    assert build(fake, tmp_path, quick=True, mnist_dir=None) == got and len(calls) == 1
    build(fake, tmp_path, quick=False, mnist_dir=None)  # another budget: built again
    assert len(calls) == 2
    assert json.loads((tmp_path / "fake" / "collection.json").read_text())["quick"] is False


def test_every_collection_has_a_holdout_scenario_every_preset_can_take():
    names = [c.name for c in COLLECTIONS]
    assert len(set(names)) == len(names) and "digits-8x8" in names
    for c in COLLECTIONS:
        cfg = load_config("one-class-mnist", ["scenario.kind=holdout", *c.scenario])
        assert cfg.scenario.kind == "holdout" and cfg.scenario.dev_anomaly


def test_knn_baseline_matches_a_brute_force_oracle():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (30, 1, 4, 4), dtype=np.uint8)
    images = rng.integers(0, 256, (7, 1, 4, 4), dtype=np.uint8)
    got = knn_scores(train, images, k=3)
    a = images.reshape(7, -1) / 255.0
    b = train.reshape(30, -1) / 255.0
    d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    np.testing.assert_allclose(got, np.sort(d, axis=1)[:, :3].mean(1), rtol=1e-5)
    assert knn_scores(train[:2], images, k=5).shape == (7,)  # k capped by the training set


def test_knn_baseline_on_a_real_split_ranks_the_odd_class_high(tiny_images, tmp_path):
    x, y = tiny_images
    np.savez(tmp_path / "t.npz", x=x, y=y)
    cfg = load_config("default", [f"data.source={tmp_path / 't.npz'}", "scenario.kind=holdout",
                                  "scenario.dev_anomaly=[3]", "scenario.eval_anomaly=[2]"])
    splits = make_splits(load_dataset(cfg.data, 0), cfg.scenario, 0)
    dev = splits.sets["dev"]
    scores = knn_scores(splits.train, dev.x)
    assert scores[dev.is_anomaly].min() > scores[~dev.is_anomaly].max()


def test_ranks_share_ties_and_put_refusals_last():
    assert rank_entries({"a": 0.9, "b": 0.8, "c": 0.9, "d": None}) == {
        "a": 1.5, "c": 1.5, "b": 3.0, "d": 4.0}
    assert rank_entries({"a": None, "b": None}) == {"a": 1.5, "b": 1.5}


def test_summary_means_ranks_target_and_misses():
    rows = [
        {"collection": "digits-8x8", "entry": BASELINE, "seed": 0, "dev_auroc": 0.9,
         "eval_auroc": 0.9},
        {"collection": "digits-8x8", "entry": "default", "seed": 0, "dev_auroc": 0.96,
         "eval_auroc": 0.93},
        {"collection": "digits-8x8", "entry": "default", "seed": 1, "dev_auroc": 0.98,
         "eval_auroc": 0.95},
        {"collection": "digits-8x8", "entry": "defects-ssim", "seed": 0, "refused": "too big"},
    ]
    out = summarise(rows, [BASELINE, "default", "defects-ssim"], ["digits-8x8"])
    cell = out["auroc"]["digits-8x8"]["default"]
    assert cell["dev"] == pytest.approx(0.97) and cell["eval"] == pytest.approx(0.94)
    assert out["auroc"]["digits-8x8"]["defects-ssim"]["refused"] == "too big"
    assert out["mean_rank_dev"] == {BASELINE: 2.0, "default": 1.0, "defects-ssim": 3.0}
    assert out["target"]["met"] is True
    assert {(b["entry"], b["set"]) for b in out["below_knn"]} == {
        ("defects-ssim", "dev"), ("defects-ssim", "eval")}


def test_a_cell_is_known_by_its_resolved_config_not_its_cache_path(tmp_path):
    ctx = Context(name="robustness", out=tmp_path, sets=["train.threads=1"])
    at = ["data.source=/tmp/a/images.npz", "scenario.kind=holdout", "seed=0"]
    key = cell_key(ctx, "mnist", "default", at, "default")
    assert key == cell_key(ctx, "mnist", "default", [at[0].replace("/a/", "/b/"), *at[1:]],
                           "default")
    assert key != cell_key(ctx, "mnist", "default", [*at[:2], "seed=1"], "default")
    assert key != cell_key(ctx, "mnist", "default", [*at, "score.tta_shift=0.036"], "default")
    quick = Context(name="robustness", out=tmp_path, quick=True, sets=["train.threads=1"])
    assert key != cell_key(quick, "mnist", "default", at, "default")
    refused = cell_key(ctx, "mnist", "default", [*at, "train.crop=0"], "default")
    assert refused.startswith("mnist|default|")  # an invalid config is a cell too
    journal = tmp_path / "robustness.rows.jsonl"
    journal.write_text(json.dumps({"key": key, "dev_auroc": 0.9}) + '\n{"key": "half')
    assert _finished(journal) == {key: {"key": key, "dev_auroc": 0.9}}

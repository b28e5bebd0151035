"""Images stay uint8 until a batch is made, and nothing computed from them changes."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import assert_close

from reconad.config import ModelConfig, ScenarioConfig
from reconad.data import Dataset, as_images, float_batch, stored_images
from reconad.detector import Detector
from reconad.models import build_model
from reconad.scenarios import make_splits
from reconad.score import error_maps, reconstruct, score_images

TINY_TRAIN = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "threads": 1}


@pytest.fixture(scope="module")
def grey_levels():
    """300 uint8 8x8 images of 3 classes (a bright row per class) and their labels."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 100)
    x = rng.integers(0, 40, size=(300, 1, 8, 8)).astype(np.uint8)
    for c in range(3):
        x[y == c, 0, 2 * c + 1] = 220
    return x, y


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, bool, np.float64])
def test_float_batch_is_the_as_images_rule(dtype):
    rng = np.random.default_rng(1)
    raw = (rng.uniform(0, 1, (4, 1, 3, 3)) if dtype is np.float64
           else rng.integers(0, 2 if dtype is bool else 256, (4, 1, 3, 3))).astype(dtype)
    kept = stored_images(raw)
    assert kept.dtype == {np.uint8: np.uint8, np.int16: np.uint8, np.int64: np.uint8,
                          bool: np.bool_, np.float64: np.float32}[dtype]
    got = float_batch(kept)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, as_images(raw))  # the very same float32 values


def test_scoring_uint8_equals_scoring_its_float32(grey_levels):
    x, _ = grey_levels
    model = build_model(ModelConfig(kind="dense", hidden=[16], latent=4), (1, 8, 8))
    floats = as_images(x)
    assert_close(score_images(model, x), score_images(model, floats), what="scores")
    assert_close(reconstruct(model, x), reconstruct(model, floats), what="reconstructions")
    assert_close(error_maps(model, x), error_maps(model, floats), what="error maps")


def test_detector_fit_on_uint8_equals_fit_on_float32(grey_levels):
    x, _ = grey_levels

    def fitted(images):
        return Detector(model={"kind": "dense", "hidden": [16], "latent": 4},
                        train=TINY_TRAIN, seed=0, progress=False).fit(images)

    small, big = fitted(x), fitted(as_images(x))
    assert len(small.history_.rows) == len(big.history_.rows) == 2
    for a, b in zip(small.history_.rows, big.history_.rows, strict=True):
        assert_close(a["train_loss"], b["train_loss"], what="train loss")
        assert_close(a["val_loss"], b["val_loss"], what="val loss")
    assert_close(small.anomaly_score(x), big.anomaly_score(as_images(x)), what="scores")
    assert_close(small.threshold_, big.threshold_, what="threshold")


@pytest.mark.parametrize("kind", ["holdout", "corruption", "one-class", "contamination"])
def test_scenarios_select_without_float_copies(grey_levels, kind):
    x, y = grey_levels
    options = {"holdout": {"dev_anomaly": [1], "eval_anomaly": [2]},
               "corruption": {"noise": "gaussian", "noise_level": 0.3},
               "one-class": {"normal": [0]},
               "contamination": {"normal": [0, 1], "contaminant": [2]}}[kind]
    cfg = ScenarioConfig(kind=kind, **options)
    stored = make_splits(Dataset("toy", x, y, x.copy(), y), cfg, seed=0)
    floats = make_splits(Dataset("toy", as_images(x), y, as_images(x), y), cfg, seed=0)
    assert stored.train.dtype == np.uint8 and stored.val.dtype == np.uint8
    np.testing.assert_array_equal(float_batch(stored.train), floats.train)
    for name, s in stored.sets.items():
        # Clean sets keep uint8; a set with corrupted (float) copies is float32 as a whole.
        assert s.x.dtype == (np.float32 if kind == "corruption" else np.uint8), name
        assert_close(float_batch(s.x), floats.sets[name].x, what=f"{kind} {name} images")
        np.testing.assert_array_equal(s.ids, floats.sets[name].ids)

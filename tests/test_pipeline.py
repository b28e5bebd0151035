"""The whole pipeline on small real-MNIST subsets: every preset clears a quality floor on a
tiny case where it must work, and the floors fail a broken detector; the run-directory
contract."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import yaml
from floors import assert_auroc_floor
from sklearn.metrics import roc_auc_score
from tolerances import assert_close

import reconad.pipeline as pipeline
from reconad.config import load_config, preset_names
from reconad.data import read_idx
from reconad.detector import Detector
from reconad.errors import ReconadError

TINY = ["data.max_train=600", "data.max_test=400", "train.epochs=2"]
THRESHOLD_KEYS = {"value", "tp", "fp", "tn", "fn", "tpr", "fpr", "precision", "recall", "f1",
                  "accuracy"}


def tiny(name, mnist_dir, *extra):
    return load_config(name, [*TINY, f"data.data_dir={mnist_dir}", *extra])


# --------------------------------------------------------------------------- quality floors

# Each preset on a tiny case where it must work (seconds of training: 3,000 training images,
# 2 epochs, small batches for enough steps), and the AUROC floor each set must clear
# (tests/floors.py). "observed": seeds 0, 1, 2 of the same case on 2 torch threads; the tests
# run seed 0, which gives the same numbers run to run. Each floor lies at least 0.05 below the
# lowest observed value (another thread count or platform changes the numbers as a seed does)
# and fails an untrained model of the same case (lr 1e-9; "untrained": seeds 0, 1), which
# test_an_untrained_detector_fails_its_floors checks for every case, as
# test_the_floors_fail_a_broken_detector does for negated and random scores.
# - holdout presets with digit 1 as the only normal digit (the write-ups' lr 1e-4 needs 150
#   epochs; 1e-3 learns in 2): 1 has the least ink of all digits, so an autoencoder that has
#   not learnt (a near-constant grey output) scores the inkier 8s and 4s *lower*.
# - one-class presets with digit 0 normal: their dev sets hold 3 anomalies here, so only eval
#   has a floor; an untrained model already reaches 0.83-0.84 (a 0 has more ink than most), so the
#   floor sits between that and the trained values.
# - noise-gaussian on every digit, 1,000 training images (conv: slower per image); its dev set
#   (100 + 10) is small: chance reaches 0.885 there (tests/floors.py), hence a floor above it.
QUALITY = ["data.max_train=3000", "data.max_test=1000", "train.epochs=2", "train.batch_size=16"]
HOLDOUT_1 = ["scenario.normal=[1]", "train.lr=0.001"]
CASES: dict[str, tuple[list[str], dict[str, float]]] = {
    # observed dev 0.9812 / 0.9939 / 0.9833, eval 0.9808 / 0.9890 / 0.9794;
    # untrained dev 0.002 / 0.001, eval 0.021 / 0.004
    "holdout-4-8": (HOLDOUT_1, {"dev": 0.90, "eval": 0.90}),
    # observed dev 0.9886 / 0.9910 / 0.9805, eval 0.9884 / 0.9842 / 0.9753,
    # final 0.9733 / 0.9937 / 0.9835; untrained all below 0.04
    "holdout-4-8-final": (HOLDOUT_1, {"dev": 0.90, "eval": 0.90, "final": 0.90}),
    # observed eval 0.9739 / 0.9770 / 0.9728; untrained 0.838 / 0.833
    "one-class-mnist": (["scenario.normal=[0]"], {"eval": 0.92}),
    # observed eval 0.9681 / 0.9689 / 0.9668; untrained 0.838 / 0.833
    "one-class-0": (["scenario.normal=[0]"], {"eval": 0.91}),
    # observed dev 0.984 / 0.981 / 0.982, eval 0.9756 / 0.9707 / 0.9783; untrained 0.0 / 0.0 (it
    # scores the noisy images lower)
    "noise-gaussian": (["data.max_train=1000"], {"dev": 0.92, "eval": 0.90}),
    # 10 % planted 3s (34 in a pool of 371); observed pool (dev) 0.9918 / 0.9750 / 0.9893;
    # untrained 0.004 / 0.004
    "contamination-1-3": (["scenario.contamination=0.1"], {"dev": 0.90}),
}
# The presets whose tiny case is not MNIST: where their floors are.
ELSEWHERE = {
    "conv-rgb": "tests/test_conv_rgb.py (a folder of RGB images; on this MNIST case, 2 epochs, "
                "its conv AE still outputs about zero: val loss 0.094, a digit's mean square)",
    "defects-ssim": "tests/test_defect_maps.py (a generated texture set with exact masks)",
    "defects": "tests/test_defects_preset.py (a folder of mixed-size images; its head learns a "
               "separable case)",
}
# The default preset on its own held-out scenario (dev: 8s, eval: 4s) in the shared default_run,
# at batch 32. Observed dev 0.9031 / 0.9009 / 0.8766, eval 0.8713 / 0.7768 / 0.8520; untrained
# dev 0.354 / 0.523, eval 0.529 / 0.605.
DEFAULT_QUALITY = [*QUALITY, "train.batch_size=32"]
DEFAULT_FLOORS = {"dev": 0.80, "eval": 0.70}


def quality_config(name, mnist_dir, *extra):
    overrides = DEFAULT_QUALITY if name == "default" else [*QUALITY, *CASES[name][0]]
    return load_config(name, [*overrides, f"data.data_dir={mnist_dir}", *extra])


def missed_floors(metrics: dict, floors: dict[str, float]) -> dict[str, str]:
    """``{set: why}`` for each set of ``metrics`` whose AUROC is below its floor."""
    missed = {}
    for set_name, floor in floors.items():
        block = metrics[set_name]
        try:
            assert_auroc_floor(block["auroc"], floor, block["n_normal"], block["n_anomaly"],
                               set_name)
        except AssertionError as error:
            missed[set_name] = str(error)
    return missed


def assert_quality(metrics: dict, floors: dict[str, float]) -> None:
    missed = missed_floors(metrics, floors)
    assert not missed, "; ".join(missed.values())


def assert_every_floor_missed(metrics: dict, floors: dict[str, float]) -> None:
    missed = missed_floors(metrics, floors)
    assert set(missed) == set(floors), f"only {sorted(missed)} of {sorted(floors)} missed"
    assert all("is below its floor" in why for why in missed.values()), missed


@pytest.fixture(scope="module")
def default_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "default"
    return pipeline.run(quality_config("default", mnist_dir), out, progress=False)


def _scores_csv(run_dir):
    with (run_dir / "scores.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_run_directory_holds_the_contract_files(default_run):
    names = {p.name for p in default_run.run_dir.iterdir()}
    assert {"config.yaml", "detector.safetensors", "metrics.json", "scores.csv", "history.csv",
            "splits.json", "samples.npz", "report.html"} <= names
    assert not list(default_run.run_dir.parent.glob(".*partial*"))
    assert yaml.safe_load((default_run.run_dir / "config.yaml").read_text())["train"]["epochs"] == 2


def test_metrics_json_follows_the_contract(default_run):
    metrics = json.loads((default_run.run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(default_run.metrics))
    assert metrics["chosen_threshold"] == "youden" and metrics["wall_seconds"] > 0
    assert set(metrics) >= {"dev", "eval", "training", "train", "scenario", "score"}
    assert "final" not in metrics
    for name in ("dev", "eval"):
        block = metrics[name]
        assert set(block) >= {"n_normal", "n_anomaly", "auroc", "average_precision", "groups",
                              "thresholds"}
        assert set(block["thresholds"]) >= {"youden", "max_f1", "pr_closest", "quantile",
                                            "target_fpr", "target_recall"}
        for values in block["thresholds"].values():
            assert THRESHOLD_KEYS <= set(values)
            assert values["tp"] + values["fn"] == block["n_anomaly"]
            assert values["fp"] + values["tn"] == block["n_normal"]
        assert sum(g["n"] for g in block["groups"].values()) == block["n_normal"] + block[
            "n_anomaly"]
    assert set(metrics["dev"]["groups"]) == {"normal", "class 8"}
    assert set(metrics["eval"]["groups"]) == {"normal", "class 4"}
    # One threshold value, chosen on dev, applied unchanged to eval.
    assert metrics["eval"]["thresholds"]["youden"]["value"] == metrics["dev"]["thresholds"][
        "youden"]["value"]


def test_scores_csv_reproduces_the_metrics(default_run):
    rows = _scores_csv(default_run.run_dir)
    metrics = default_run.metrics
    threshold = metrics["dev"]["thresholds"]["youden"]["value"]
    for name in ("dev", "eval"):
        part = [r for r in rows if r["set"] == name]
        assert len(part) == metrics[name]["n_normal"] + metrics[name]["n_anomaly"]
        y = np.array([int(r["is_anomaly"]) for r in part])
        s = np.array([float(r["score"]) for r in part])
        assert roc_auc_score(y, s) == pytest.approx(metrics[name]["auroc"], abs=1e-6)
        flags = np.array([int(r["flag"]) for r in part])
        assert flags.sum() == metrics[name]["thresholds"]["youden"]["tp"] + metrics[name][
            "thresholds"]["youden"]["fp"]
        np.testing.assert_array_equal(flags, s > threshold)


def test_mnist_rows_are_named_by_position_and_grouped_by_digit(default_run, mnist_dir):
    # Named datasets have no files: an id is the image's position in its source file (before
    # the data.max_test subset), and digits, whose names are numbers, group as "class 8".
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    rows = _scores_csv(default_run.run_dir)
    for row in rows:
        origin, _, position = row["id"].partition(":")
        assert origin == "test" and position.isdigit(), row["id"]
        assert int(row["label"]) == labels[int(position)]
        assert row["group"] == ("normal" if row["is_anomaly"] == "0" else f"class {row['label']}")
    assert {r["group"] for r in rows} == {"normal", "class 8", "class 4"}
    assert default_run.metrics["class_names"] == [str(d) for d in range(10)]
    with np.load(default_run.run_dir / "samples.npz") as samples:
        assert all(re.fullmatch(r"test:\d+", i) for i in samples["ids"].tolist())


def test_history_and_splits_are_recorded(default_run):
    with (default_run.run_dir / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert all(float(r["val_loss"]) > 0 for r in history)
    splits = json.loads((default_run.run_dir / "splits.json").read_text())
    assert splits == default_run.sizes
    assert splits["dev"]["normal"] == default_run.metrics["dev"]["n_normal"]


def test_saved_detector_scores_new_images_alone(default_run, mnist_dir):
    det = Detector.load(default_run.run_dir / "detector.safetensors")
    assert det.threshold_ == default_run.metrics["dev"]["thresholds"]["youden"]["value"]
    rows = [r for r in _scores_csv(default_run.run_dir) if r["set"] == "eval"][:20]
    test_x = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    ids = [int(r["id"].split(":")[1]) for r in rows]
    scores = det.anomaly_score(test_x[ids])
    assert_close(scores, [float(r["score"]) for r in rows], what="rescored eval images")


def test_samples_npz_feeds_the_pictures(default_run):
    with np.load(default_run.run_dir / "samples.npz") as samples:
        n = len(samples["scores"])
        assert samples["images"].shape == (n, 1, 28, 28)
        assert samples["reconstructions"].shape == (n, 1, 28, 28)
        assert samples["error_maps"].shape == (n, 28, 28)
        assert set(samples["kinds"]) == {"sample", "top", "bottom"}
        top = samples["scores"][samples["kinds"] == "top"]
        assert list(top) == sorted(top, reverse=True)


def test_every_preset_has_a_quality_floor():
    assert set(CASES) | {"default"} | set(ELSEWHERE) == set(preset_names())


def test_default_preset_clears_its_floor(default_run):
    assert_quality(default_run.metrics, DEFAULT_FLOORS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_preset_runs_end_to_end_above_its_floor(name, mnist_dir, tmp_path):
    result = pipeline.run(quality_config(name, mnist_dir), tmp_path / name, progress=False)
    metrics = result.metrics
    expected_sets = {"dev", "eval", "final"} if name.endswith("final") else {"dev", "eval"}
    assert expected_sets <= set(metrics) and ("final" in metrics) == ("final" in expected_sets)
    for set_name in expected_sets:
        assert metrics[set_name]["n_anomaly"] > 0 and metrics[set_name]["n_normal"] > 0
    assert metrics["chosen_threshold"] in metrics["dev"]["thresholds"]
    assert json.loads((result.run_dir / "metrics.json").read_text()) == json.loads(
        json.dumps(metrics))
    assert_quality(metrics, CASES[name][1])


@pytest.mark.parametrize("broken", ["negated", "random"])
def test_the_floors_fail_a_broken_detector(broken, mnist_dir, monkeypatch):
    """The same case and floors as test_every_preset_runs_end_to_end_above_its_floor, with the
    detector's score negated or replaced by random numbers."""
    name = "holdout-4-8"
    score = Detector.anomaly_score

    def wrong(self, X):
        right = score(self, X)
        return -right if broken == "negated" else np.random.default_rng(0).random(len(right))

    monkeypatch.setattr(Detector, "anomaly_score", wrong)
    result = pipeline.run(quality_config(name, mnist_dir), write=False, progress=False)
    assert_every_floor_missed(result.metrics, CASES[name][1])


@pytest.mark.parametrize("name", ["default", *sorted(CASES)])
def test_an_untrained_detector_fails_its_floors(name, mnist_dir):
    """Each case of the floors with a model that has not learnt (lr 1e-9): it misses every
    floor of its case."""
    result = pipeline.run(quality_config(name, mnist_dir, "train.lr=1e-9"), write=False,
                          progress=False)
    assert_every_floor_missed(result.metrics,
                              DEFAULT_FLOORS if name == "default" else CASES[name][1])


def test_contamination_reports_the_planted_images(mnist_dir, tmp_path):
    config = tiny("contamination-1-3", mnist_dir)
    result = pipeline.run(config, tmp_path / "c", progress=False, report=False)
    dev = result.metrics["dev"]
    assert set(dev["groups"]) == {"normal", "planted class 3"}
    assert dev["n_anomaly"] == round(0.01 * dev["n_normal"])
    assert "precision" in dev["thresholds"]["quantile"]
    # The quantile threshold is taken over the whole unlabelled pool (the dev set), not over
    # its small validation part: it flags the expected fraction of the pool.
    rows = [r for r in _scores_csv(result.run_dir) if r["set"] == "dev"]
    scores = np.array([float(r["score"]) for r in rows])
    quantile = dev["thresholds"]["quantile"]
    assert quantile["value"] == pytest.approx(np.quantile(scores, config.threshold.quantile))
    assert quantile["tp"] + quantile["fp"] == int((scores > quantile["value"]).sum())


def test_a_failed_run_leaves_no_directory(mnist_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "_write_samples", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.run(tiny("default", mnist_dir, "train.epochs=1"), tmp_path / "run",
                     progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_run_directory_is_not_overwritten(mnist_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(ReconadError, match="already exists and is not empty"):
        pipeline.run(tiny("default", mnist_dir), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.json").read_text() == "{}"


def test_latent_larger_than_the_input_is_rejected(mnist_dir, tmp_path):
    with pytest.raises(ReconadError, match="latent"):
        pipeline.run(tiny("default", mnist_dir, "model.latent=1000"), tmp_path / "r",
                     progress=False)
    assert not (tmp_path / "r").exists()


def test_score_sets_scores_each_distinct_image_once():
    """dev and eval share their normal images: score_sets scores them once and gives every
    set the scores a separate scoring would."""
    from reconad.pipeline import score_sets
    from reconad.scenarios import EvalSet

    rng = np.random.default_rng(0)
    pictures = {f"test:{i}": rng.random((1, 4, 4)) for i in range(12)}

    class Counting:
        scored = 0

        def anomaly_score(self, x):
            self.scored += len(x)
            return np.asarray(x).reshape(len(x), -1).mean(1) * 10

    def eval_set(keys):
        n = len(keys)
        return EvalSet(x=np.stack([pictures[k] for k in keys]), is_anomaly=np.zeros(n, bool),
                       group=np.full(n, "normal"), label=np.zeros(n, np.int64),
                       ids=np.array(keys))

    keys = list(pictures)
    sets = {"dev": eval_set(keys[:8]), "eval": eval_set(keys[:6] + keys[8:]),
            "final": eval_set(keys[2:5])}
    detector = Counting()
    scores = score_sets(detector, sets)
    assert detector.scored == 12  # 8 + 4 new + 0 new, not 8 + 10 + 3
    for name, s in sets.items():
        np.testing.assert_array_equal(scores[name], Counting().anomaly_score(s.x))

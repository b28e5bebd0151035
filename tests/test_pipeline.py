"""The whole pipeline on small real-MNIST subsets: every preset, the run-directory contract."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import yaml
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


@pytest.fixture(scope="module")
def default_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "default"
    return pipeline.run(tiny("default", mnist_dir), out, progress=False)


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


# defects-ssim and defects need a folder of images: tests/test_defect_maps.py and
# tests/test_defects_preset.py run them on generated ones.
@pytest.mark.parametrize("name", sorted(set(preset_names())
                                        - {"default", "defects-ssim", "defects"}))
def test_every_preset_runs_end_to_end(name, mnist_dir, tmp_path):
    result = pipeline.run(tiny(name, mnist_dir), tmp_path / name, progress=False)
    metrics = result.metrics
    expected_sets = {"dev", "eval", "final"} if name.endswith("final") else {"dev", "eval"}
    assert expected_sets <= set(metrics) and ("final" in metrics) == ("final" in expected_sets)
    for set_name in expected_sets:
        assert metrics[set_name]["n_anomaly"] > 0 and metrics[set_name]["n_normal"] > 0
        assert 0.0 <= metrics[set_name]["auroc"] <= 1.0
    assert metrics["chosen_threshold"] in metrics["dev"]["thresholds"]
    assert (result.run_dir / "metrics.json").is_file()


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

"""Every chart writes a readable PNG, on ordinary data and on the edge cases of real runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runfixtures import open_png as _png

from reconad import report


def _description(path: Path) -> str:
    return _png(path).info.get("Description", "")


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, int), np.ones(40, int)]
    scores = np.where(y == 1, rng.normal(2.0, 1.0, y.size), rng.normal(0.0, 1.0, y.size))
    groups = np.where(y == 1, "class 8", "normal")
    return scores, y, groups


def test_operating_points_match_counted_confusion(scored):
    scores, y, _ = scored
    thresholds = {"low": -10.0, "mid": 1.0, "high": 100.0}
    points = report.operating_points(scores, y, thresholds)
    for name, value in thresholds.items():
        tp = sum(1 for s, t in zip(scores, y, strict=True) if s > value and t == 1)
        fp = sum(1 for s, t in zip(scores, y, strict=True) if s > value and t == 0)
        assert points[name]["tpr"] == pytest.approx(tp / 40)
        assert points[name]["fpr"] == pytest.approx(fp / 200)
        expected_precision = tp / (tp + fp) if tp + fp else 1.0
        assert points[name]["precision"] == pytest.approx(expected_precision)
    assert points["low"]["tpr"] == 1.0 and points["high"]["precision"] == 1.0


def test_roc_and_pr_state_auroc_and_ap_from_an_independent_count(scored, tmp_path):
    scores, y, _ = scored
    pos, neg = scores[y == 1], scores[y == 0]
    # AUROC = probability that an anomaly outscores a normal (ties count half).
    auroc = ((pos[:, None] > neg[None, :]).mean()
             + 0.5 * (pos[:, None] == neg[None, :]).mean())
    desc = _description(report.roc_curve(scores, y, {"t": 1.0}, tmp_path / "roc.png",
                                         chosen="t"))
    assert float(desc.split("AUROC=")[1].split()[0]) == pytest.approx(auroc, abs=1e-6)
    # AP = mean over anomalies of the precision at their own score.
    ranked = np.argsort(-scores, kind="stable")
    hits = np.cumsum(y[ranked])
    ap = np.mean([hits[i] / (i + 1) for i in range(len(y)) if y[ranked][i] == 1])
    desc = _description(report.precision_recall_curve(scores, y, {"t": 1.0},
                                                      tmp_path / "pr.png"))
    assert float(desc.split("AP=")[1].split()[0]) == pytest.approx(ap, abs=1e-6)


@pytest.mark.parametrize("kind", ["roc_curve", "precision_recall_curve"])
def test_curves_without_anomalies_say_so_instead_of_failing(kind, tmp_path):
    draw = getattr(report, kind)
    desc = _description(draw(np.linspace(0, 1, 30), np.zeros(30), {"q": 0.5}, tmp_path / "a.png"))
    assert desc.startswith("No anomalies in this set")
    desc = _description(draw(np.linspace(0, 1, 30), np.ones(30), {}, tmp_path / "b.png"))
    assert desc.startswith("No normal images in this set")


def test_score_distributions_survive_one_image_groups_equal_scores_and_nan(tmp_path):
    scores = np.r_[np.full(20, 0.02), 0.02]
    groups = np.array(["normal"] * 20 + ["class 4"])  # a group of one image
    desc = _description(report.score_distributions(scores, groups, {"youden": 0.02, "q": 0.5},
                                                   tmp_path / "equal.png", chosen="youden"))
    assert "All 21 scores are equal." in desc
    with_nan = np.r_[np.linspace(0, 1, 10), np.nan, np.inf]
    _png(report.score_distributions(with_nan, np.full(12, "normal"), {"t": np.nan},
                                    tmp_path / "nan.png"))
    desc = _description(report.score_distributions(np.array([np.nan]), np.array(["normal"]), {},
                                                   tmp_path / "empty.png"))
    assert desc == "No finite scores to show."


def test_learning_curve_marks_best_epoch_and_handles_one_epoch_without_validation(tmp_path):
    e = np.arange(1, 6)
    desc = _description(report.learning_curve(e, 1 / e, 1.2 / e, tmp_path / "lc.png",
                                              best_epoch=4))
    assert desc == "best epoch 4"
    desc = _description(report.learning_curve(np.array([1]), np.array([0.5]),
                                              np.array([np.nan]), tmp_path / "one.png",
                                              best_epoch=1))
    assert desc == "best epoch 1"
    assert "No epochs" in _description(report.learning_curve(np.array([]), np.array([]),
                                                             np.array([]), tmp_path / "0.png"))


def test_confusion_matrix_with_an_empty_row(tmp_path):
    _png(report.confusion_matrix(tp=0, fp=3, tn=97, fn=0, out_path=tmp_path / "cm.png"))


def test_class_boxplot_and_metric_bars(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 10)
    y = (labels == 8).astype(int)
    _png(report.class_boxplot(rng.uniform(0, 1, 100), labels, y, tmp_path / "box.png"))
    desc = _description(report.class_boxplot(np.ones(5), np.full(5, -1), np.zeros(5),
                                             tmp_path / "unlabelled.png"))
    assert desc.startswith("No labelled images")
    _png(report.metric_bars({"a": {"AUROC": 0.9, "F1": None}, "b": {"AUROC": 0.8, "F1": 0.5}},
                            tmp_path / "bars.png"))


def test_importing_reconad_and_its_report_modules_does_not_import_matplotlib():
    code = ("import sys, reconad, reconad.report, reconad.rundir, reconad.pipeline, "
            "reconad.cli; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_figure_is_the_public_house_style_and_writes_atomically(tmp_path):
    import matplotlib

    before = matplotlib.rcParams["axes.spines.top"]
    with report.figure(tmp_path / "two.png", figsize=(6, 3), ncols=2) as (fig, axes):
        assert len(axes) == 2
        assert matplotlib.rcParams["axes.spines.top"] is False  # the house rc style is active
        axes[0].plot([0, 1], [0, 1], color=report.NORMAL_COLOR)
        report.message(axes[1], "Nothing to draw here.")
    assert matplotlib.rcParams["axes.spines.top"] == before  # and restored afterwards
    assert _description(tmp_path / "two.png") == "Nothing to draw here."
    with pytest.raises(RuntimeError), report.figure(tmp_path / "broken.png") as (fig, ax):
        raise RuntimeError("drawing failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.png"]

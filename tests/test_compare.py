"""compare_runs: CSV, chart and page of several runs' headline metrics."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from runfixtures import write_synthetic_run

from reconad.errors import ReconadError
from reconad.report import compare_runs, headline


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [write_synthetic_run(root / v, v) for v in ("gray", "rgb")]


def test_headline_takes_threshold_free_metrics_and_the_chosen_operating_point(runs):
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    row = headline(metrics)
    at = metrics["eval"]["thresholds"][metrics["chosen_threshold"]]
    assert row["eval.auroc"] == metrics["eval"]["auroc"]
    assert row["eval.f1"] == at["f1"] and row["eval.fpr"] == at["fpr"]
    assert row["final.auroc"] is None  # final set has no anomalies
    assert row["epochs_run"] == 6 and row["name"] == "synthetic-gray"


def test_compare_writes_csv_png_and_html_with_the_runs_numbers(runs, tmp_path):
    page = compare_runs(runs, tmp_path / "cmp")
    assert page == tmp_path / "cmp" / "compare.html"
    with (tmp_path / "cmp" / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["gray", "rgb"]
    for row, run in zip(rows, runs, strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        at = metrics["dev"]["thresholds"][metrics["chosen_threshold"]]
        assert float(row["dev.auroc"]) == pytest.approx(metrics["dev"]["auroc"], rel=1e-7)
        assert float(row["dev.recall"]) == pytest.approx(at["recall"], rel=1e-7)
        assert row["path"] == str(run)
    assert rows[1]["final.auroc"] == "" and rows[0]["final.accuracy"] != ""
    image = Image.open(tmp_path / "cmp" / "compare.png")
    image.load()
    assert image.format == "PNG"
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1 and "http" not in text
    # The better dev AUROC of the two runs is highlighted, and only that one in its column.
    aurocs = [json.loads((r / "metrics.json").read_text())["dev"]["auroc"] for r in runs]
    best = f"{max(aurocs):.4g}"
    assert f'<td data-column="dev.auroc" class=chosen>{best}</td>' in text
    assert text.count('data-column="dev.auroc" class=chosen') == 1


def test_runs_with_the_same_folder_name_are_told_apart(runs, tmp_path):
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(runs[0], a)
    shutil.copytree(runs[1], b)
    compare_runs([a, b], tmp_path / "out")
    with (tmp_path / "out" / "compare.csv").open() as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["a/run", "b/run"]


def test_compare_errors(runs, tmp_path):
    with pytest.raises(ReconadError, match="at least one run directory"):
        compare_runs([], tmp_path)
    with pytest.raises(ReconadError, match="does not exist"):
        compare_runs([runs[0], tmp_path / "missing"], tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReconadError, match="metrics.json is missing"):
        compare_runs([empty], tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReconadError, match="is a file; give a folder"):
        compare_runs(runs, tmp_path / "file")
    assert not (tmp_path / "out").exists()

"""write_plots and write_report on synthetic run directories holding the contract's files."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runfixtures import write_synthetic_run

from reconad.errors import ReconadError
from reconad.report import write_plots, write_report

SET_PLOTS = ("scores", "roc", "pr", "confusion")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {v: write_synthetic_run(root / v, v) for v in ("gray", "rgb")}


@pytest.fixture(scope="module")
def reports(runs) -> dict[str, Path]:
    return {v: write_report(d) for v, d in runs.items()}


class _Cells(HTMLParser):
    """Collects the text of every element carrying data-* attributes, and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[dict[str, str], str]] = []
        self.links: list[str] = []
        self._open: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag in ("td", "b"):
            self._open.append({k[5:]: v for k, v in a.items() if k.startswith("data-")})
            self._text = ""

    def handle_data(self, data):
        if self._open:
            self._text += data

    def handle_endtag(self, tag):
        if tag in ("td", "b") and self._open:
            attrs = self._open.pop()
            if attrs:
                self.cells.append((attrs, self._text.strip()))


def _parse(path: Path) -> _Cells:
    parser = _Cells()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _same(text: str, expected) -> bool:
    if expected is None:
        return text == "–"
    if isinstance(expected, bool):
        return text == ("yes" if expected else "no")
    if isinstance(expected, int):
        return int(text.replace(",", "")) == expected
    return float(text) == pytest.approx(expected, rel=1e-3, abs=1e-12)


def _pngs(run: Path) -> set[str]:
    return {p.name for p in (run / "plots").glob("*.png")}


def test_every_figure_of_the_contract_is_drawn(runs, reports):
    sets = ("dev", "eval", "final")
    assert _pngs(runs["gray"]) == (
        {f"{k}_{s}.png" for k in (*SET_PLOTS, "classes") for s in sets}
        | {"learning_curve.png", "reconstructions.png", "gallery.png"})
    # Unlabelled (label -1) 3-channel run without a final set: no per-class box plots.
    assert _pngs(runs["rgb"]) == (
        {f"{k}_{s}.png" for k in SET_PLOTS for s in ("dev", "eval")}
        | {"learning_curve.png", "reconstructions.png", "gallery.png"})
    for d in runs.values():
        assert [p.name for p in d.rglob(".*")] == []  # no temporary files left behind


def test_plots_that_need_anomalies_say_so_on_a_set_without_them(runs, reports):
    note = Image.open(runs["gray"] / "plots" / "roc_final.png").info["Description"]
    assert note.startswith("No anomalies in this set")
    assert "AUROC=" in Image.open(runs["gray"] / "plots" / "roc_dev.png").info["Description"]
    note = Image.open(runs["rgb"] / "plots" / "scores_eval.png").info["Description"]
    assert "scores are equal" in note


@pytest.mark.parametrize("variant", ["gray", "rgb"])
def test_report_is_self_contained_and_embeds_every_plot(runs, reports, variant):
    report = reports[variant]
    assert report == runs[variant] / "report.html"
    parsed = _parse(report)
    embedded = [base64.b64decode(s.split(",", 1)[1]) for s in parsed.links
                if s.startswith("data:image/png;base64,")]
    files = sorted((runs[variant] / "plots").glob("*.png"))
    assert sorted(embedded) == sorted(p.read_bytes() for p in files)
    assert all(s.startswith(("data:image/png;base64,", "#")) for s in parsed.links)
    assert "<script" not in report.read_text() and "http" not in report.read_text()


@pytest.mark.parametrize("variant", ["gray", "rgb"])
def test_report_tables_show_the_numbers_of_metrics_json(runs, reports, variant):
    metrics = json.loads((runs[variant] / "metrics.json").read_text())
    cells = _parse(reports[variant]).cells
    seen = set()
    for attrs, text in cells:
        if "method" in attrs:
            value = metrics[attrs["set"]]["thresholds"][attrs["method"]][attrs["field"]]
            seen.add((attrs["set"], attrs["method"], attrs["field"]))
        elif "group" in attrs:
            where = metrics["train"] if attrs["set"] == "train" else metrics[attrs["set"]]
            value = where["groups"][attrs["group"]][attrs["field"]]
        elif attrs.get("field", "").startswith("training."):
            value = metrics["training"][attrs["field"].split(".", 1)[1]]
        else:
            value = metrics[attrs["set"]][attrs["field"]]
        assert _same(text, value), (attrs, text, value)
    expected = {(s, m, f) for s in ("dev", "eval", "final") if s in metrics
                for m, t in metrics[s]["thresholds"].items() for f in t}
    assert seen == expected


def test_report_with_optional_files_missing_says_what_is_missing(runs, tmp_path):
    run = tmp_path / "partial"
    shutil.copytree(runs["rgb"], run)
    for name in ("history.csv", "samples.npz", "splits.json"):
        (run / name).unlink()
    shutil.rmtree(run / "plots")
    written = write_plots(run)
    assert {p.name for p in written} == _pngs(run) == {
        f"{k}_{s}.png" for k in SET_PLOTS for s in ("dev", "eval")}
    # Names from the data are escaped in the page.
    for name in ("scores.csv", "metrics.json"):
        path = run / name
        path.write_text(path.read_text().replace("gaussian", "noise <8> & co"))
    text = write_report(run).read_text()
    assert "Missing from the run directory: history.csv, samples.npz" in text
    assert "splits.json is missing" in text
    assert "noise &lt;8&gt; &amp; co" in text and "<8>" not in text


def _broken(runs, tmp_path, name: str, content: bytes | None) -> Path:
    run = tmp_path / "broken"
    shutil.copytree(runs["gray"], run)
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_bytes(content)
    return run


@pytest.mark.parametrize("name, content, message", [
    ("metrics.json", None, r"metrics.json is missing; is .* a `reconad run` output"),
    ("metrics.json", b"{not json", r"metrics.json is not valid JSON"),
    ("metrics.json", b"[1, 2]", r"should hold a JSON object, not list"),
    ("scores.csv", None, r"scores.csv is missing"),
    ("scores.csv", b"id,set,score\n1,dev,0.1\n", r"lacks the column\(s\) group, label"),
    ("scores.csv", b"id,set,group,label,is_anomaly,score,flag\na,dev,normal,1,0,0.1,0\n"
                   b"b,dev,normal,1,0,high,0\n", r"scores.csv line 3: column 'score' holds 'high'"),
    ("history.csv", b"epoch,train_loss,val_loss\none,0.1,0.1\n", r"line 2: column 'epoch'"),
    ("samples.npz", b"PK\x03\x04 truncated", r"samples.npz is not a readable .npz file"),
    ("splits.json", b"", r"splits.json is not valid JSON"),
])
def test_broken_run_files_raise_one_line_errors(runs, tmp_path, name, content, message):
    run = _broken(runs, tmp_path, name, content)
    with pytest.raises(ReconadError, match=message) as info:
        write_report(run)
    assert "\n" not in str(info.value)


def test_samples_with_mismatched_arrays_are_rejected(runs, tmp_path):
    run = tmp_path / "samples"
    shutil.copytree(runs["rgb"], run)
    with np.load(run / "samples.npz") as npz:
        data = dict(npz)
    data["scores"] = data["scores"][:-1]
    np.savez(run / "samples.npz", **data)
    with pytest.raises(ReconadError, match=re.escape("samples.npz: arrays scores do not match")):
        write_plots(run)


def test_missing_run_directory(tmp_path):
    with pytest.raises(ReconadError, match="does not exist; pass the folder"):
        write_report(tmp_path / "nope")

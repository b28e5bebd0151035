"""report.html: one self-contained offline page from a run directory and its plots.

Numbers appear as :func:`format_number` writes them (the browser test parses them back);
PNGs are embedded with :func:`img_tag`, so the page needs no other file. ``reconad compare``
uses the same CSS and helpers for its page.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reconad.rundir import Run

# Rows of the metrics table, in reading order; the threshold methods are its columns.
THRESHOLD_FIELDS = ("value", "tp", "fp", "tn", "fn", "tpr", "fpr", "precision", "recall", "f1",
                    "accuracy", "balanced_accuracy")
FIELD_LABELS = {"value": "threshold", "tp": "TP", "fp": "FP", "tn": "TN", "fn": "FN",
                "tpr": "TPR", "fpr": "FPR", "f1": "F1", "balanced_accuracy": "balanced acc."}
SET_TITLES = {"dev": "Development set", "eval": "Evaluation set", "final": "Final set"}


@dataclass
class ReportFigure:
    """One written plot and where it belongs in the report."""

    path: Path
    caption: str
    section: str  # "training", "pictures" or a set name


def format_number(value: Any, digits: int = 4) -> str:
    """How every number appears in the report (the browser test parses it back)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}g}"
    return html.escape(str(value))


def _e(text: Any) -> str:
    return html.escape(str(text))


def img_tag(path: Path, alt: str) -> str:
    """An <img> with the PNG embedded as base64, so the page needs no other file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def figures_html(figures: list[ReportFigure]) -> str:
    """A responsive grid of captioned, embedded figures."""
    if not figures:
        return ""
    items = "".join(f"<figure>{img_tag(f.path, f.caption)}<figcaption>{_e(f.caption)}"
                    f"</figcaption></figure>" for f in figures)
    return f'<div class="grid">{items}</div>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px}
header{background:#26364a;color:#fff;padding:22px 24px}
header h1{margin:0 0 4px;font-size:1.6em} header p{margin:0;opacity:.85}
section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:16px 20px;
margin:18px 0}
h2{margin:0 0 12px;font-size:1.25em;color:#26364a} h3{font-size:1.05em;margin:16px 0 8px}
table{border-collapse:collapse;font-size:.9em;margin:6px 0 12px}
th,td{padding:4px 10px;border-bottom:1px solid #e8eaee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left} thead th{background:#f0f2f5}
.chosen{background:#fff4d6;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e2e5ea;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:1.3em}
.card span{font-size:.8em;color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:14px}
figure{margin:0;border:1px solid #eef0f3;border-radius:6px;padding:8px;background:#fff}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.82em;color:#555;margin-top:4px}
.wide .grid{grid-template-columns:1fr}
pre{background:#f4f5f7;padding:10px;border-radius:6px;overflow:auto;font-size:.85em;
columns:3 240px}
.note{color:#8a5a00}
"""


def _metrics_table(metrics: dict[str, Any], set_name: str, chosen: str | None) -> str:
    entries = {m: t for m, t in ((metrics.get(set_name) or {}).get("thresholds") or {}).items()
               if isinstance(t, dict) and t}
    if not entries:
        return '<p class="note">No threshold could be computed for this set.</p>'
    methods = list(entries)
    head = "".join(f'<th class="{"chosen" if m == chosen else ""}">{_e(m)}'
                   f'{" (chosen)" if m == chosen else ""}</th>' for m in methods)
    rows = []
    for field in THRESHOLD_FIELDS:
        cells = "".join(
            f'<td class="{"chosen" if m == chosen else ""}" data-set="{_e(set_name)}" '
            f'data-method="{_e(m)}" data-field="{field}">'
            f'{format_number(entries[m].get(field), 6 if field == "value" else 4)}</td>'
            for m in methods)
        rows.append(f"<tr><th>{_e(FIELD_LABELS.get(field, field))}</th>{cells}</tr>")
    return (f'<table class="metrics"><thead><tr><th>flag = score &gt; threshold</th>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _groups_table(groups: dict[str, Any], set_name: str) -> str:
    rows = "".join(
        f"<tr><td>{_e(g)}</td>"
        + "".join(f'<td data-set="{_e(set_name)}" data-group="{_e(g)}" data-field="{k}">'
                  f"{format_number(v.get(k))}</td>" for k in ("n", "mean", "std"))
        + "</tr>" for g, v in groups.items() if isinstance(v, dict))
    return (f"<table><thead><tr><th>group</th><th>n</th><th>mean score</th><th>std</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")


def _set_section(run: Run, set_name: str, figures: list[ReportFigure]) -> str:
    m = run.metrics.get(set_name) or {}
    chosen = run.metrics.get("chosen_threshold")
    cards = "".join(
        f'<div class="card"><span>{label}</span><b data-set="{_e(set_name)}" '
        f'data-field="{key}">{format_number(m.get(key))}</b></div>'
        for key, label in (("n_normal", "normal images"), ("n_anomaly", "anomalies"),
                           ("auroc", "AUROC"), ("average_precision", "average precision")))
    note = ""
    if m and (m.get("auroc") is None):
        note = ('<p class="note">AUROC and AP are not defined: this set lacks normal or '
                'anomalous images.</p>')
    if not m:
        note = '<p class="note">metrics.json has no entry for this set.</p>'
    return (f'<section id="set-{_e(set_name)}"><h2>{_e(SET_TITLES.get(set_name, set_name))} '
            f'<small>({_e(set_name)})</small></h2><div class="cards">{cards}</div>{note}'
            f"<h3>Every threshold on this set</h3>{_metrics_table(run.metrics, set_name, chosen)}"
            f"<h3>Score per group</h3>{_groups_table(m.get('groups') or {}, set_name)}"
            f"{_localization_html(m.get('localization'), set_name)}"
            f"{figures_html(figures)}</section>")


def _localization_html(loc: Any, set_name: str) -> str:
    """Pixel AUROC and PRO of the set's anomaly maps, overall and per defect kind ('' when the
    set has no defect masks)."""
    if not isinstance(loc, dict):
        return ""
    rows = [("all images", loc)] + [
        (kind, v) for kind, v in (loc.get("groups") or {}).items() if isinstance(v, dict)]
    body = "".join(
        f"<tr><td>{_e(kind)}</td>" + "".join(
            f'<td data-set="{_e(set_name)}" data-localization="{_e(kind)}" data-field="{k}">'
            f"{format_number(v.get(k))}</td>"
            for k in ("pixel_auroc", "pro", "n_images", "n_regions")) + "</tr>"
        for kind, v in rows)
    return (f"<h3>Defect localisation (anomaly maps against the masks)</h3><table><thead><tr>"
            f"<th>defect kind</th><th>pixel AUROC</th><th>PRO (FPR &le; "
            f"{format_number(loc.get('pro_max_fpr'))})</th><th>images</th><th>defect regions"
            f"</th></tr></thead><tbody>{body}</tbody></table>")


def _splits_html(splits: dict[str, Any] | None) -> str:
    if splits is None:
        return '<p class="note">splits.json is missing from this run directory.</p>'
    rows = []
    for split, value in splits.items():
        if isinstance(value, dict):
            for group, n in value.items():
                rows.append(f"<tr><td>{_e(split)}</td><td>{_e(group)}</td>"
                            f"<td>{format_number(n)}</td></tr>")
        else:
            rows.append(f"<tr><td>{_e(split)}</td><td></td><td>{format_number(value)}</td></tr>")
    return (f'<table class="splits"><thead><tr><th>split</th><th>group</th><th>images</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _training_html(metrics: dict[str, Any]) -> str:
    t = metrics.get("training") or {}
    labels = (("epochs_run", "epochs run"), ("best_epoch", "best epoch"),
              ("best_val_loss", "best validation loss"), ("stopped_early", "stopped early"),
              ("interrupted", "interrupted"), ("train_seconds", "training seconds"))
    rows = "".join(f'<tr><td>{label}</td><td data-field="training.{k}">'
                   f"{format_number(t.get(k))}</td></tr>" for k, label in labels if k in t)
    train = ((metrics.get("train") or {}).get("groups")) or {}
    return (f"<table><tbody>{rows}</tbody></table><h3>Training-set scores</h3>"
            f"{_groups_table(train, 'train')}")


def render_report(run: Run, figures: list[ReportFigure]) -> str:
    """The whole report.html page for a run and the figures drawn from it."""
    m = run.metrics
    name = m.get("name", run.root.name)
    subtitle = " · ".join(_e(x) for x in (
        f"scenario {m.get('scenario', '?')}", f"score {m.get('score', '?')}",
        f"chosen threshold {m.get('chosen_threshold', '?')}",
        f"reconad {m.get('reconad_version', '?')}",
        f"run time {format_number(m.get('wall_seconds'), 4)} s"))
    by_section: dict[str, list[ReportFigure]] = {}
    for f in figures:
        by_section.setdefault(f.section, []).append(f)
    sets = run.scores.set_names()
    nav = " · ".join(f'<a href="#set-{_e(s)}">{_e(s)}</a>' for s in sets)
    missing = [n for n, v in (("history.csv", run.history), ("samples.npz", run.samples),
                              ("config.yaml", run.config_text)) if v is None]
    missing_html = (f'<p class="note">Missing from the run directory: {_e(", ".join(missing))}'
                    f" (their parts of the report are left out).</p>" if missing else "")
    config = (f"<pre>{_e(run.config_text)}</pre>" if run.config_text is not None
              else '<p class="note">config.yaml is missing.</p>')
    body = [
        f"<header><h1>{_e(name)}</h1><p>{subtitle}</p></header><main>",
        missing_html,
        f"<section><h2>Data</h2><p>Sets: {nav}</p>{_splits_html(run.splits)}</section>",
        f"<section id=\"training\"><h2>Training</h2>{_training_html(m)}"
        f"{figures_html(by_section.get('training', []))}</section>",
        *(_set_section(run, s, by_section.get(s, [])) for s in sets),
    ]
    if by_section.get("pictures"):
        body.append(f'<section class="wide" id="pictures"><h2>Pictures</h2>'
                    f"{figures_html(by_section['pictures'])}</section>")
    body.append(f"<section><h2>Configuration</h2>{config}</section></main>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>reconad report: {_e(name)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")

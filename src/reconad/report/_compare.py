"""``reconad compare``: the headline metrics of several runs side by side.

Reads only each run's metrics.json and writes ``compare.csv`` (one row per run),
``compare.png`` (grouped bars, :func:`metric_bars`) and ``compare.html`` (the table and the chart
in one offline page, in the report's CSS).

>>> compare_runs(["runs/a", "runs/b"], "runs/compare")   # doctest: +SKIP
PosixPath('runs/compare/compare.html')
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reconad.errors import ReconadError
from reconad.files import write_text_atomic
from reconad.report._html import CSS, SET_TITLES, format_number, img_tag
from reconad.report._style import NORMAL_COLOR, PALETTE, figure, message
from reconad.rundir import SET_ORDER, read_metrics, run_dir_path

RUN_FIELDS = ("name", "scenario", "score", "chosen_threshold")
TRAINING_FIELDS = ("epochs_run", "best_val_loss")
# Per set: threshold-free metrics, then the chosen threshold's operating point.
SET_METRICS = ("auroc", "average_precision", "f1", "precision", "recall", "fpr", "accuracy")
LOWER_IS_BETTER = {"fpr", "best_val_loss", "wall_seconds"}
LABELS = {"auroc": "AUROC", "average_precision": "AP", "f1": "F1", "fpr": "FPR",
          "best_val_loss": "best val loss", "epochs_run": "epochs",
          "wall_seconds": "seconds", "chosen_threshold": "threshold"}
CHART_METRICS = ("auroc", "average_precision", "f1")


def _labels(paths: list[Path]) -> list[str]:
    """Short unique names: the folder name, with its parent where two runs share one."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The comparable numbers of one run's metrics.json, flat: ``{"eval.auroc": 0.97, ...}``.

    Args:
        metrics: a parsed metrics.json.

    Returns:
        An ordered mapping; values are numbers, strings or None (not available).
    """
    row: dict[str, Any] = {k: metrics.get(k) for k in RUN_FIELDS}
    training = metrics.get("training") or {}
    row.update({k: training.get(k) for k in TRAINING_FIELDS})
    row["wall_seconds"] = metrics.get("wall_seconds")
    chosen = metrics.get("chosen_threshold")
    for set_name in SET_ORDER:
        m = metrics.get(set_name)
        if not isinstance(m, dict):
            continue
        at = (m.get("thresholds") or {}).get(chosen) or {}
        for key in SET_METRICS:
            row[f"{set_name}.{key}"] = m.get(key) if key in m else at.get(key)
    return row


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    sets = [s for s in SET_ORDER if any(c.startswith(f"{s}.") for c in columns)]
    fixed = [c for c in columns if "." not in c]
    return fixed + [f"{s}.{k}" for s in sets for k in SET_METRICS]


def _best(rows: list[dict[str, Any]], column: str) -> float | None:
    values = [r.get(column) for r in rows]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(rows) < 2 or not numbers or column in ("epochs_run",):
        return None
    return min(numbers) if column.split(".")[-1] in LOWER_IS_BETTER else max(numbers)


def _csv_text(labels: list[str], paths: list[Path], rows: list[dict[str, Any]],
              columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "path", *columns])
    for label, path, row in zip(labels, paths, rows, strict=True):
        values = ["" if row.get(c) is None else
                  (f"{row[c]:.8g}" if isinstance(row[c], float) else row[c]) for c in columns]
        writer.writerow([label, str(path), *values])
    return buffer.getvalue()


def _group_title(group: str) -> str:
    """"run", or a set's title in lower case ("evaluation set")."""
    return SET_TITLES[group].lower() if group in SET_TITLES else group


def _html(labels: list[str], rows: list[dict[str, Any]], columns: list[str],
          chart: Path) -> str:
    groups = [("run", [c for c in columns if "." not in c])]
    for set_name in SET_ORDER:
        cols = [c for c in columns if c.startswith(f"{set_name}.")]
        if cols:
            groups.append((set_name, cols))
    top = "".join(f'<th colspan="{len(cols) + (g == "run")}" class="group">'
                  f"{html.escape(_group_title(g))}</th>" for g, cols in groups)
    sub = "<th>run</th>" + "".join(
        f"<th>{html.escape(LABELS.get(c.split('.')[-1], c.split('.')[-1]))}</th>"
        for _, cols in groups for c in cols)
    body = []
    for label, row in zip(labels, rows, strict=True):
        cells = []
        for c in columns:
            value, best = row.get(c), _best(rows, c)
            bold = best is not None and value == best
            cells.append(f'<td data-column="{html.escape(c)}"{" class=chosen" if bold else ""}>'
                         f"{format_number(value)}</td>")
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>reconad compare</title><style>{CSS}"
            f"table{{font-size:.82em}} th.group{{text-align:center;border-left:2px solid #fff}}"
            f"</style></head><body><header><h1>Comparing "
            f"{len(rows)} runs</h1><p>Metrics at each run's chosen threshold; the best value "
            f"of each column is highlighted.</p></header><main><section style=\"overflow:auto\">"
            f"<table><thead><tr>{top}</tr><tr>{sub}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table></section><section><figure>{img_tag(chart, 'headline metrics')}"
            f"</figure></section></main></body></html>\n")


def metric_bars(
    values: Mapping[str, Mapping[str, float | None]],
    out_path: str | Path,
    title: str = "Headline metrics",
) -> Path:
    """Grouped bars: one group per metric, one bar per run (missing values left out).

    Args:
        values: run label -> metric name -> value in [0, 1] (or None when not available).
        out_path: PNG to write.
        title: figure title.

    Returns:
        ``out_path`` as a Path.
    """
    runs = list(values)
    metrics: list[str] = []
    for run in runs:
        metrics += [m for m in values[run] if m not in metrics]
    width = 0.8 / max(len(runs), 1)
    with figure(out_path, figsize=(max(6.0, 1.1 * len(metrics) * max(1, len(runs)) ** 0.5 + 2),
                                    4.4)) as (fig, ax):
        if not runs or not metrics:
            message(ax, "No metrics to compare.")
            return Path(out_path)
        x = np.arange(len(metrics))
        for r, run in enumerate(runs):
            v = np.array([np.nan if values[run].get(m) is None else float(values[run][m])
                          for m in metrics])
            pos = x - 0.4 + width * (r + 0.5)
            bars = ax.bar(pos, np.nan_to_num(v), width=width * 0.92,
                          color=PALETTE[r % len(PALETTE)] if r else NORMAL_COLOR, label=run)
            for bar, value in zip(bars, v, strict=True):
                text = "n/a" if np.isnan(value) else f"{value:.3f}"
                ax.text(bar.get_x() + bar.get_width() / 2, (0 if np.isnan(value) else value)
                        + 0.01, text, ha="center", va="bottom", rotation=90, fontsize=7)
        ax.set_xticks(x, metrics)
        ax.set_ylim(0, 1.18)
        ax.set_ylabel("value (0 to 1)")
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(4, len(runs)))
    return Path(out_path)


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write compare.csv, compare.png and compare.html for several run directories.

    Args:
        run_dirs: run directories written by ``reconad run``.
        out_dir: folder to write into (created if needed).

    Returns:
        The path of compare.html.

    Raises:
        ReconadError: no run given, a run directory or its metrics.json is missing or broken,
            or ``out_dir`` is not a folder.
    """
    if not run_dirs:
        raise ReconadError("compare needs at least one run directory; pass the folders "
                           "`reconad run` wrote")
    paths = [run_dir_path(p) for p in run_dirs]
    rows = [headline(read_metrics(p)) for p in paths]
    labels = _labels(paths)
    columns = _columns(rows)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReconadError(f"--out {out} is a file; give a folder for the comparison")
    out.mkdir(parents=True, exist_ok=True)

    # Bars for the metrics that at least one run has (AUROC of a set without anomalies: none).
    charted = [c for c in columns if c.split(".")[-1] in CHART_METRICS
               and any(row.get(c) is not None for row in rows)]
    chart_values = {
        label: {f"{c.split('.')[0]} {LABELS[c.split('.')[1]]}": row.get(c) for c in charted}
        for label, row in zip(labels, rows, strict=True)}
    chart = metric_bars(chart_values, out / "compare.png",
                              title="Headline metrics (F1 at each run's chosen threshold)")
    write_text_atomic(out / "compare.csv", _csv_text(labels, paths, rows, columns))
    html_path = out / "compare.html"
    write_text_atomic(html_path, _html(labels, rows, columns, chart))
    return html_path

"""A run's plots and its ``report.html``, from the run directory alone.

Reads only the files of the run-directory contract (docs/architecture.md) through
:func:`reconad.rundir.read_run`: metrics.json and scores.csv are required; without history,
splits or samples the report says what is missing.

>>> paths = write_plots("runs/first")        # doctest: +SKIP
>>> write_report("runs/first")               # doctest: +SKIP
PosixPath('runs/first/report.html')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reconad.files import write_text_atomic
from reconad.report._curves import precision_recall_curve, roc_curve
from reconad.report._html import SET_TITLES, ReportFigure, format_number, render_report
from reconad.report._overlays import defect_overlays
from reconad.report._pictures import gallery, reconstructions
from reconad.report._plots import (
    class_boxplot,
    confusion_matrix,
    learning_curve,
    score_distributions,
)
from reconad.rundir import Run, Scores, read_run

OVERLAYS = 8  # highest-scored images drawn with their anomaly maps


def _thresholds(metrics: dict[str, Any], set_name: str) -> dict[str, float]:
    """method -> value for one set (methods that could not be computed are absent)."""
    entries = (metrics.get(set_name) or {}).get("thresholds") or {}
    return {m: float(t["value"]) for m, t in entries.items()
            if isinstance(t, dict) and isinstance(t.get("value"), (int, float))}


def _class_names(metrics: dict[str, Any]) -> list[str] | None:
    """The name of each label value (metrics.json ``class_names``; None for labels that are
    plain numbers, and for runs written before it was recorded)."""
    names = metrics.get("class_names")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    return None


def _named_labels(labels: np.ndarray, names: list[str] | None) -> list:
    """Each label as its class name where the run has names (``blowhole``); the number
    otherwise (-1 stays: unknown)."""
    if names is None:
        return labels.tolist()
    return [names[v] if 0 <= v < len(names) else v for v in labels.tolist()]


def _normal_group(scores: Scores) -> str:
    """The largest group whose images are all normal ("normal" in every scenario so far)."""
    normal = scores.groups[scores.is_anomaly == 0]
    if normal.size == 0:
        return "normal"
    names, counts = np.unique(normal, return_counts=True)
    return str(names[np.argmax(counts)])


def _write_plots(run: Run) -> list[ReportFigure]:
    out = run.root / "plots"
    chosen = run.metrics.get("chosen_threshold")
    figures: list[ReportFigure] = []
    if run.history is not None:
        best = (run.metrics.get("training") or {}).get("best_epoch")
        path = learning_curve(run.history["epoch"], run.history["train_loss"],
                              run.history["val_loss"], out / "learning_curve.png",
                              best_epoch=best)
        figures.append(ReportFigure(path, "Training and validation loss per epoch; the star marks "
                                    "the epoch whose weights were kept.", "training"))
    normal = _normal_group(run.scores)
    names = _class_names(run.metrics)
    for set_name in run.scores.set_names():
        s = run.scores.subset(set_name)
        thresholds = _thresholds(run.metrics, set_name)
        title = SET_TITLES.get(set_name, f"Set {set_name}")
        figures.append(ReportFigure(
            score_distributions(s.scores, s.groups, thresholds, out / f"scores_{set_name}.png",
                                chosen=chosen, normal_group=normal,
                                title=f"{title}: score distributions"),
            "Score histograms per group (densities) with every threshold; the chosen one "
            "is drawn solid.", set_name))
        figures.append(ReportFigure(
            roc_curve(s.scores, s.is_anomaly, thresholds, out / f"roc_{set_name}.png",
                      chosen=chosen, title=f"{title}: ROC"),
            "ROC curve and the operating point of each threshold.", set_name))
        figures.append(ReportFigure(
            precision_recall_curve(s.scores, s.is_anomaly, thresholds,
                                   out / f"pr_{set_name}.png", chosen=chosen,
                                   title=f"{title}: precision-recall"),
            "Precision-recall curve and the operating point of each threshold.", set_name))
        counts = ((run.metrics.get(set_name) or {}).get("thresholds") or {}).get(chosen) or {}
        if all(isinstance(counts.get(k), int) for k in ("tp", "fp", "tn", "fn")):
            path = confusion_matrix(counts["tp"], counts["fp"], counts["tn"], counts["fn"],
                                    out / f"confusion_{set_name}.png",
                                    title=f"{title}: confusion at {chosen} "
                                          f"({format_number(counts.get('value'), 6)})")
            figures.append(ReportFigure(path, "Counts and row rates when flagging score > the "
                                        "chosen threshold.", set_name))
        classes = np.unique(s.labels[s.labels >= 0])
        if classes.size > 2:
            figures.append(ReportFigure(
                class_boxplot(s.scores, s.labels, s.is_anomaly, out / f"classes_{set_name}.png",
                              title=f"{title}: scores per class", class_names=names),
                "Scores per original class, normal and anomalous images apart.", set_name))
    if run.samples is not None:
        figures += _sample_plots(run.samples, out, normal, names)
    return figures


def _sample_plots(samples: dict[str, np.ndarray], out: Path, normal: str,
                  names: list[str] | None) -> list[ReportFigure]:
    figures = []
    kinds = samples["kinds"]
    pick = kinds == "sample"
    if pick.any():
        path = reconstructions(samples["images"][pick], samples["reconstructions"][pick],
                               samples["error_maps"][pick], samples["scores"][pick],
                               samples["groups"][pick], out / "reconstructions.png",
                               normal_group=normal)
        figures.append(ReportFigure(path, "A random sample of each group of the evaluation set: "
                                    "original, reconstruction, and per-pixel error.",
                              "pictures"))
    extremes = np.flatnonzero(np.isin(kinds, ["top", "bottom"]))
    if extremes.size:
        # An image can be both among the top and the bottom 16 of a small set: show it once.
        _, first = np.unique(samples["ids"][extremes], return_index=True)
        idx = extremes[np.sort(first)]
        k = int(max((kinds == "top").sum(), (kinds == "bottom").sum()))
        path = gallery(samples["images"][idx], samples["scores"][idx], out / "gallery.png",
                       k=k, labels=_named_labels(samples["labels"][idx], names),
                       ids=samples["ids"][idx],
                       title="Evaluation set: most anomalous and most normal images")
        figures.append(ReportFigure(path, "Highest- and lowest-scoring images of the evaluation "
                                    "set with score, label and id.", "pictures"))
    top = np.flatnonzero(kinds == "top")[:OVERLAYS]
    if "masks" in samples and top.size:
        path = defect_overlays(samples["images"][top], samples["error_maps"][top],
                               samples["masks"][top], samples["scores"][top],
                               float(samples["map_threshold"]), out / "overlays.png",
                               ids=samples["ids"][top])
        figures.append(ReportFigure(path, "Highest-scoring images of the evaluation set: the "
                                    "anomaly map over the image, the outline of the map above "
                                    "the 99th percentile of the normal validation maps "
                                    "(solid) and of the true defect (dashed).", "pictures"))
    return figures


def write_plots(run_dir: str | Path) -> list[Path]:
    """Draw every plot of a run into ``RUN_DIR/plots/`` (each PNG written atomically).

    Args:
        run_dir: a run directory written by ``reconad run``.

    Returns:
        The paths of the PNG files written.

    Raises:
        ReconadError: the run directory or one of its files is missing or malformed.
    """
    return [f.path for f in _write_plots(read_run(run_dir))]


def write_report(run_dir: str | Path) -> Path:
    """Draw the plots and write ``RUN_DIR/report.html``, one self-contained offline page.

    Args:
        run_dir: a run directory written by ``reconad run``.

    Returns:
        The path of report.html.

    Raises:
        ReconadError: the run directory or one of its files is missing or malformed.
    """
    run = read_run(run_dir)
    figures = _write_plots(run)
    path = run.root / "report.html"
    write_text_atomic(path, render_report(run, figures))
    return path

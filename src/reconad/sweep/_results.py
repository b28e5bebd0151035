"""What a sweep's trials add up to: per-trial metrics, summaries over seeds, and the outputs.

Reads the dev-set objectives out of each run's metrics.json, summarises repeated seeds (mean,
sample std, Student-t 95 % interval of the mean), turns the Optuna study into rows, and writes
them as ``trials.csv``, the ranked table, ``ranking-METRIC.png`` bar charts and, for
one-at-a-time sweeps, ``oat-FACTOR.png`` line plots (matplotlib is imported only when plotting).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reconad.files import write_csv_atomic
from reconad.report import ANOMALY_COLOR, NORMAL_COLOR, figure
from reconad.sweep._space import BASE_LABEL
from reconad.sweep._spec import Choices, SweepSpec

METRICS = ("dev_auroc", "dev_ap", "score_gap", "val_loss")
DIRECTIONS = {"dev_auroc": "maximize", "dev_ap": "maximize", "score_gap": "maximize",
              "val_loss": "minimize"}


# --------------------------------------------------------------------------- objectives


def score_gap(groups: dict[str, dict[str, Any]]) -> float | None:
    """Mean anomaly score minus mean normal score; anomaly groups pooled, weighted by size."""
    normal = groups.get("normal")
    others = [g for name, g in groups.items() if name != "normal" and g.get("n")]
    if not normal or not others or normal.get("mean") is None:
        return None
    pooled = sum(g["n"] * g["mean"] for g in others) / sum(g["n"] for g in others)
    return float(pooled - normal["mean"])


def metric_values(metrics: dict[str, Any], split: str = "dev") -> dict[str, float | None]:
    """Every sweep objective read from one run's metrics.json (``split``: dev or eval)."""
    part = metrics.get(split) or {}
    return {
        f"{split}_auroc": part.get("auroc"),
        f"{split}_ap": part.get("average_precision"),
        "score_gap": score_gap(part.get("groups") or {}),
        "val_loss": (metrics.get("training") or {}).get("best_val_loss"),
    }


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample std and a Student-t 95 % interval of the mean over repeated seeds."""
    from scipy.stats import t

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "std": None, "ci95_low": None, "ci95_high": None, "n": n}
    std = float(np.std(values, ddof=1))
    half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


# --------------------------------------------------------------------------- trials


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def trial_label(spec: SweepSpec, params: dict[str, Any], factors: dict | None) -> str:
    """A short human name for a trial's configuration."""
    if spec.mode == "one-at-a-time":
        return str(params.get("variant", "?"))
    # factors with one value say nothing; leaf names (lr, not train.lr) when unambiguous
    varied = [k for k, f in spec.space.items()
              if not (isinstance(f, Choices) and len(f.choices) == 1)]
    leaves = [k.rsplit(".", 1)[-1] for k in varied]
    names = leaves if len(set(leaves)) == len(leaves) else varied
    factors = factors or {}
    return ", ".join(f"{n}={_format_value(factors.get(k))}"
                     for n, k in zip(names, varied, strict=True))


def trial_rows(study, spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per trial for trials.csv (skipped duplicates and retried ones left out).

    A configuration counts once: should a retry and the trial it replaced both complete (a
    worker thought dead came back), only the earlier trial is kept. A trial without parameters
    (its process was killed after claiming it, before the sampler gave it a configuration) is
    no configuration and gets no row, unless it failed with an error of its own.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    done: set[str] = set()
    rows = []
    for t in trials:
        state = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running"}.get(t.state.name)
        if state is None or (state == "failed" and t.number in retried):
            continue
        if not t.params and "error" not in t.user_attrs:
            continue
        if state == "complete":
            identity = _identity(t, trials, spec)
            if identity in done:
                continue
            done.add(identity)
        if state == "failed" and "error" not in t.user_attrs:
            state = "interrupted"
        values = t.user_attrs.get("values") or {}
        stats = summarize(values[spec.objective]) if state == "complete" else {}
        row = {"trial": t.number, "state": state,
               "label": trial_label(spec, t.params, t.user_attrs.get("factors"))}
        for key in spec.space:
            row[key] = (t.user_attrs.get("factors") or {}).get(key)
        row.update(objective=spec.objective, **{k: stats.get(k) for k in
                                                ("mean", "std", "ci95_low", "ci95_high", "n")})
        for metric in METRICS:
            known = [v for v in values.get(metric, []) if v is not None]
            row[metric] = float(np.mean(known)) if known else None
        row["values"] = ";".join(f"{v:.6g}" for v in values.get(spec.objective, []))
        row.update(seconds=t.user_attrs.get("seconds"),
                   run_dirs=";".join(t.user_attrs.get("run_dirs", [])),
                   error=t.user_attrs.get("error", ""),
                   overrides=json.dumps(t.user_attrs.get("overrides", {})))
        rows.append(row)
    return rows


def _identity(trial, trials: list, spec: SweepSpec) -> str:
    """What makes two trials the same configuration: its parameters (grid, one-at-a-time), or
    the trial a chain of retries started from (random, TPE: equal draws are distinct trials)."""
    if spec.mode in ("grid", "one-at-a-time"):
        return json.dumps(trial.params, sort_keys=True)
    number = trial.number
    while trials[number].user_attrs.get("retry_of") is not None:
        number = trials[number].user_attrs["retry_of"]
    return str(number)


def ranked(rows: list[dict[str, Any]], spec: SweepSpec, metric: str | None = None) -> list[dict]:
    """Completed rows, best first by the mean of ``metric`` (default: the objective)."""
    metric = metric or spec.objective
    key = "mean" if metric == spec.objective else metric
    done = [r for r in rows if r["state"] == "complete" and r[key] is not None]
    return sorted(done, key=lambda r: r[key], reverse=DIRECTIONS[metric] == "maximize")


def write_trials_csv(path: Path, spec: SweepSpec, rows: list[dict[str, Any]]) -> None:
    """trials.csv: every parameter and metric of every trial (written atomically)."""
    columns = ("trial", "state", "label", *spec.space, "objective", "mean", "std", "ci95_low",
               "ci95_high", "n", *METRICS, "values", "seconds", "run_dirs", "error", "overrides")
    write_csv_atomic(path, columns, ([_csv_value(row.get(k)) for k in columns] for row in rows))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def print_ranking(rows: list[dict[str, Any]], spec: SweepSpec, console: Console,
                  limit: int = 20) -> None:
    """The ranked table: objective mean, std and 95 % interval, then the other dev metrics."""
    repeated = spec.repeats > 1
    others = [m for m in METRICS if m != spec.objective]
    table = Table(title=f"{spec.name}: ranked by mean {spec.objective} on the development set")
    table.add_column("rank", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("configuration", overflow="fold", ratio=1)
    for column in (spec.objective, *(["std", "95% CI"] if repeated else []), *others):
        table.add_column(column, justify="right")
    num = (lambda v: "–" if v is None else f"{v:.4f}")  # noqa: E731
    for rank, row in enumerate(ranked(rows, spec)[:limit], start=1):
        spread = []
        if repeated:
            spread = [num(row["std"]), "–" if row["ci95_low"] is None
                      else f"{row['ci95_low']:.4f}–{row['ci95_high']:.4f}"]
        table.add_row(str(rank), str(row["trial"]), escape(row["label"]), num(row["mean"]),
                      *spread, *[num(row[m]) for m in others])
    console.print(table)
    failed = [r for r in rows if r["state"] != "complete"]
    for row in failed:
        console.print(escape(f"trial {row['trial']} [{row['label']}] {row['state']}"
                             f"{': ' + row['error'] if row['error'] else ''}"))


# --------------------------------------------------------------------------- charts
# The sweep's only plotting code: the ranking bar charts and the one-at-a-time factor plots,
# drawn in reconad.report's house style (the same figure() and colours as every run chart).


def plot_sweep(rows: list[dict[str, Any]], spec: SweepSpec, sweep_dir: Path,
               limit: int = 30) -> list[Path]:
    """Bar charts ranking the configurations by each dev metric, and for one-at-a-time sweeps
    one line plot per factor (objective against the factor's value, the base marked)."""
    written = []
    for metric in (spec.objective, *[m for m in METRICS if m != spec.objective]):
        order = ranked(rows, spec, metric)[:limit]
        if order:
            written.append(_ranking_chart(order, spec, metric, sweep_dir / f"ranking-{metric}.png"))
    if spec.mode == "one-at-a-time":
        for factor in spec.space:
            points = [r for r in ranked(rows, spec)
                      if r["label"] == BASE_LABEL or r["label"].startswith(f"{factor}=")]
            if len(points) > 1:
                written.append(_factor_plot(points, spec, factor, sweep_dir / f"oat-{factor}.png"))
    return written


def _ranking_chart(order: list[dict], spec: SweepSpec, metric: str, path: Path) -> Path:
    key = "mean" if metric == spec.objective else metric
    values = [r[key] for r in order][::-1]  # best at the top
    # error bars: half the 95 % interval of the objective over seeds (when repeated)
    errors = [0.0 if r.get("ci95_high") is None or key != "mean"
              else r["ci95_high"] - r["mean"] for r in order][::-1]
    labels = [f"#{r['trial']} {r['label']}"[:60] for r in order][::-1]
    with figure(path, figsize=(9, 1.5 + 0.28 * len(order))) as (_fig, ax):
        ax.barh(range(len(values)), values, xerr=errors if any(errors) else None,
                color=NORMAL_COLOR)
        ax.set_yticks(range(len(values)), labels, fontsize=7)
        ax.set_xlabel(f"{metric} (development set){', mean ± 95% CI' if any(errors) else ''}")
        low, high = min(values), max(values)
        pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
        ax.set_xlim(low - pad if DIRECTIONS[metric] == "maximize" or low < 0 else 0, high + pad)
        ax.set_title(f"{spec.name}: configurations ranked by {metric}")
    return path


def _factor_plot(points: list[dict], spec: SweepSpec, factor: str, path: Path) -> Path:
    def order(row: dict) -> tuple:
        value = row[factor]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (0, value, "") if numeric else (1, 0, json.dumps(value))

    points = sorted(points, key=order)
    means = [r["mean"] for r in points]
    errors = [0.0 if r["ci95_high"] is None else r["ci95_high"] - r["mean"] for r in points]
    with figure(path, figsize=(6, 4)) as (_fig, ax):
        ax.errorbar(range(len(points)), means, yerr=errors if any(errors) else None,
                    marker="o", capsize=3, color=NORMAL_COLOR)
        for i, row in enumerate(points):
            if row["label"] == BASE_LABEL:
                ax.plot([i], [row["mean"]], "o", color=ANOMALY_COLOR, markersize=9, zorder=5,
                        label="base configuration")
        ax.set_xticks(range(len(points)), [_format_value(r[factor]) for r in points],
                      fontsize=8)
        ax.set_xlabel(factor)
        ax.set_ylabel(f"{spec.objective} (development set)")
        ax.set_title(f"{spec.name}: {factor}, other factors at the base")
        ax.legend(loc="best", fontsize=8)
    return path

"""The end of a sweep: its table, charts and best configuration, and the one re-evaluation
of the best configuration on the evaluation set once no trial is left running or queued."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from reconad import pipeline
from reconad.config import Config, config_to_yaml
from reconad.files import write_text_atomic
from reconad.sweep._results import (
    plot_sweep,
    print_ranking,
    ranked,
    score_gap,
    trial_rows,
    write_trials_csv,
)
from reconad.sweep._space import config_for
from reconad.sweep._study import SweepContext
from reconad.sweep._trials import remaining, waiting_trials, worker_id, worker_is_gone


@dataclass
class SweepResult:
    """What a sweep produced (so far, when other workers are still running)."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    complete: bool
    best: dict[str, Any] | None
    best_config: Path | None
    final_metrics: dict[str, Any] | None


def finish_sweep(study, ctx: SweepContext, console: Console) -> SweepResult:
    """Write trials.csv, the table, the plots and the best config; re-evaluate the best
    configuration once on the evaluation set when every trial is done."""
    spec, sweep_dir = ctx.spec, ctx.sweep_dir
    rows = trial_rows(study, spec)
    write_trials_csv(sweep_dir / "trials.csv", spec, rows)
    print_ranking(rows, spec, console)
    plot_sweep(rows, spec, sweep_dir)
    pending = [r for r in rows if r["state"] == "running"] + waiting_trials(study)
    complete = not pending and remaining(study, ctx) <= 0
    order = ranked(rows, spec)
    if not order:
        console.print("[yellow]no trial completed: nothing to rank[/]")
        return SweepResult(sweep_dir, rows, complete, None, None, None)
    best_row = order[0]
    overrides = json.loads(best_row["overrides"])
    best = {"trial": best_row["trial"], "label": best_row["label"], "overrides": overrides,
            spec.objective: best_row["mean"]}
    best_config = config_for(ctx.base, overrides)
    best_config.name = f"{spec.name}-best"
    best_path = sweep_dir / "best_config.yaml"
    write_text_atomic(best_path, f"# best of sweep {spec.name}: trial {best_row['trial']} "
                                 f"({spec.objective} {best_row['mean']:.4f} on dev)\n"
                                 + config_to_yaml(best_config))
    console.print(escape(f"best configuration (trial {best_row['trial']}: {best_row['label']})"
                         f" written to {best_path}"))
    if not complete:
        console.print(f"[yellow]{len(pending)} trial(s) still running or queued elsewhere: "
                      "the final re-evaluation waits; run the same command again later[/]")
        return SweepResult(sweep_dir, rows, False, best, best_path, None)
    final = _final_run(best, best_config, ctx, console)
    return SweepResult(sweep_dir, rows, True, best, best_path, final)


def _final_run(best: dict, config: Config, ctx: SweepContext, console: Console) -> dict | None:
    """Run the best configuration once more and report its evaluation-set metrics."""
    summary_path = ctx.sweep_dir / "best.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary.get("trial") != best["trial"]:
        summary = _reevaluate(best, config, ctx, console)
        if summary is None:
            return None
    for split in ("eval", "final"):
        if split in summary:
            s = summary[split]
            shown = ", ".join(f"{k} {v:.4f}" for k, v in s.items() if isinstance(v, float))
            t = s.get("threshold") or {}
            at = ", ".join(f"{name} {t[k]:.3f}" for k, name in (
                ("tpr", "TPR"), ("fpr", "FPR"), ("precision", "precision"), ("f1", "F1"))
                if t.get(k) is not None)
            console.print(f"best configuration on the {split} set: {shown}"
                          + (f"; at the {summary['chosen_threshold']} threshold: {at}" if at
                             else ""))
    return summary


def _take_lock(lock: Path) -> bool:
    """Create ``lock`` naming this process; take over one left by a process that is gone."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = lock.read_text().strip()
            except FileNotFoundError:
                continue  # released meanwhile
            if not worker_is_gone(holder):
                return False
            lock.unlink(missing_ok=True)  # its process died during the final run
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(worker_id())
        return True
    return False


def _reevaluate(best: dict, config: Config, ctx: SweepContext, console: Console) -> dict | None:
    lock = ctx.sweep_dir / ".final.lock"
    if not _take_lock(lock):
        console.print(f"another process is re-evaluating the best configuration (delete {lock} "
                      "if none is)")
        return None
    try:
        run_fn = ctx.run_fn or pipeline.run
        console.print("re-evaluating the best configuration on the evaluation set ...")
        result = run_fn(config, ctx.sweep_dir / "best", progress=False, overwrite=True)
        summary = {"trial": best["trial"], "label": best["label"], "overrides": best["overrides"],
                   "dev": {ctx.spec.objective: best[ctx.spec.objective]}, "run_dir": "best",
                   "chosen_threshold": result.metrics.get("chosen_threshold")}
        for split in ("eval", "final"):
            if split in result.metrics:
                part = result.metrics[split]
                summary[split] = {
                    "auroc": part.get("auroc"), "average_precision": part.get("average_precision"),
                    "score_gap": score_gap(part.get("groups") or {}),
                    "threshold": part.get("thresholds", {}).get(summary["chosen_threshold"]),
                }
        write_text_atomic(ctx.sweep_dir / "best.json", json.dumps(summary, indent=2) + "\n")
    finally:
        lock.unlink(missing_ok=True)
    return summary

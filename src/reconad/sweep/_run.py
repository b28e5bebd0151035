"""``reconad sweep``'s entry point: validate the sweep, run its trials, finish it."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from rich.console import Console

from reconad.errors import ReconadError
from reconad.files import write_text_atomic
from reconad.sweep._final import SweepResult, finish_sweep
from reconad.sweep._results import trial_rows, write_trials_csv
from reconad.sweep._space import base_config, check_space
from reconad.sweep._spec import load_sweep
from reconad.sweep._study import RunFn, SweepContext, open_study
from reconad.sweep._trials import requeue, requeue_stale, todo
from reconad.sweep._workers import run_trials


def run_sweep(
    source: str | Path,
    *,
    quick: bool = False,
    workers: int = 1,
    storage: str | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    run_fn: RunFn | None = None,
    console: Console | None = None,
) -> SweepResult:
    """Run (or continue) a sweep, then write its table, plots, best config and final run.

    Trials of workers that died (killed, out of memory) in this run or an earlier one are
    queued again and run, so every configuration ends with one result.

    Args:
        source: a sweep preset name (``reconad sweeps``) or a sweep YAML file.
        quick: use the sweep's reduced budget (its ``quick`` section).
        workers: trial processes on this machine, sharing the study.
        storage: an Optuna storage URL shared by workers on several machines (default: SQLite
            in the sweep directory).
        out: the sweep directory (default ``sweeps/NAME``).
        data_dir: folder holding the dataset files (sets ``data.data_dir``).
        run_fn: stands in for :func:`reconad.pipeline.run` (tests).
        console: where to print progress and the ranked table.

    Example:
        Minutes of training, so not run by the doctests:

        >>> result = run_sweep("one-at-a-time-dense", quick=True)  # doctest: +SKIP
        >>> result.best["overrides"]  # doctest: +SKIP
    """
    console = console or Console()
    if workers < 1:
        raise ReconadError(f"--workers must be at least 1 (got {workers})")
    spec = load_sweep(source, quick=quick)
    base = base_config(spec, [f"data.data_dir={data_dir}"] if data_dir is not None else [])
    size = check_space(spec, base)
    sweep_dir = Path(out) if out is not None else Path("sweeps") / spec.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if storage is None:
        storage = f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    write_text_atomic(sweep_dir / "sweep.yaml",
                      yaml.safe_dump(spec.model_dump(mode="json", exclude={"quick"}),
                                     sort_keys=False))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ctx = SweepContext(spec=spec, base=base, sweep_dir=sweep_dir, storage=storage, size=size,
                       threads=max(1, (cores or 1) // workers) if workers > 1 else None,
                       run_fn=run_fn)

    study = open_study(ctx, requeue_stale)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "FAIL":
            requeue(study, trial)  # interrupted (Ctrl-C) trials of an earlier run
    what = "configurations" if ctx.is_grid else "trials"
    console.print(f"sweep {spec.name}: {spec.mode}, {size} {what} × {spec.repeats} seed(s), "
                  f"objective {spec.objective} (dev set); {todo(study, ctx)} to run in "
                  f"{sweep_dir}")
    try:
        run_trials(study, ctx, workers, console)
    except KeyboardInterrupt:
        write_trials_csv(sweep_dir / "trials.csv", spec, trial_rows(study, spec))
        console.print("[yellow]interrupted: run the same command again to continue[/]")
        raise
    return finish_sweep(study, ctx, console)

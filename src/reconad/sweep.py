"""``reconad sweep``: hyper-parameter search and repeated seeds on top of Optuna.

Optuna owns the search (grid, random, TPE samplers) and the study storage that makes a sweep
resumable and shareable between worker processes (SQLite in the sweep directory by default, or
any database URL such as ``postgresql://`` for workers on several machines). This module turns
an Optuna trial into reconad runs, runs the workers, resumes interrupted sweeps and re-evaluates
the best configuration; :mod:`reconad.sweep_results` ranks the configurations on the
development set only and writes the tables and plots. The sweep directory::

    SWEEP_DIR/
      sweep.yaml             the sweep as run (after --quick)
      study.db               the Optuna study (default storage)
      runs/trial-0003-seed-0/  one run directory per trial and seed
      trials.csv             every trial: parameters, objective mean/std/95 % CI, metrics, error
      ranking-METRIC.png     bar charts ranking the configurations
      oat-FACTOR.png         one-at-a-time sweeps: metric against each factor's value
      best_config.yaml       the best configuration, ready for ``reconad run``
      best/                  its final re-evaluation run (the only look at the evaluation set)
      best.json              that run's evaluation metrics
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from reconad.config import Config, config_to_yaml
from reconad.errors import ReconadError
from reconad.files import write_text_atomic
from reconad.sweep_results import (
    DIRECTIONS,
    METRICS,
    metric_values,
    plot_sweep,
    print_ranking,
    ranked,
    score_gap,
    summarize,
    trial_label,
    trial_rows,
    write_trials_csv,
)
from reconad.sweep_space import (
    SweepSpec,
    base_config,
    check_space,
    config_for,
    factor_values,
    grid_space,
    load_sweep,
    suggest,
)

HEARTBEAT_S, GRACE_S = 20, 120  # a trial silent for GRACE_S is stale (its worker died)
RunFn = Callable[..., Any]  # reconad.pipeline.run or a stand-in with its signature


# --------------------------------------------------------------------------- the study


@dataclass
class _Context:
    """What every worker process needs to run trials (picklable)."""

    spec: SweepSpec
    base: dict[str, Any]
    sweep_dir: Path
    storage: str
    size: int  # grid configurations, or the random/tpe trial budget
    threads: int | None
    run_fn: RunFn | None


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print one line per trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _open_study(ctx: _Context):
    """Create or load the study; refuse one that holds a different sweep."""
    import optuna
    import sqlalchemy.exc

    _quiet_optuna()
    spec = ctx.spec
    sampler = _sampler(spec, ctx.base, spec.seed)
    url = _with_driver(ctx.storage)
    sqlite = url.startswith("sqlite")
    shown = _redact(url)
    for attempt in range(3):  # workers racing to create the tables may collide once
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else {},
                heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=_retry_interrupted,
            )
            study = optuna.create_study(
                storage=storage, study_name=f"reconad-{spec.name}", sampler=sampler,
                direction=DIRECTIONS[spec.objective], load_if_exists=True)
            break
        except ImportError:
            raise ReconadError(f"the storage {shown} needs a database driver that is not "
                               "installed; pip install psycopg2-binary (PostgreSQL) or the "
                               "driver your URL names") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
            if attempt == 2 or not (sqlite or _lost_creation_race(exc)):
                reason = str(exc).strip().splitlines()[0][:200]
                raise ReconadError(f"cannot open the sweep storage {shown} ({reason}); check the "
                                   "URL and that the database server is running") from None
            time.sleep(1.0 + attempt)
    digest = study.user_attrs.get("reconad_digest")
    if digest is None:
        study.set_user_attr("reconad_digest", spec.digest())
    elif digest != spec.digest():
        raise ReconadError(f"the storage {shown} already holds a different sweep named "
                           f"{spec.name!r}; use another --out/--storage, or delete it to start "
                           "over")
    return study


def _lost_creation_race(exc: Exception) -> bool:
    """Whether opening a server storage failed because another worker created Optuna's tables
    at the same moment: a duplicate row (IntegrityError) or, in PostgreSQL, a duplicate table
    or enum type ("type studydirection already exists"); opening again then succeeds."""
    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.IntegrityError) or (
        isinstance(exc, sqlalchemy.exc.ProgrammingError) and "already exists" in str(exc))


def _sampler(spec: SweepSpec, base: dict[str, Any], seed: int):
    import optuna

    if _is_grid(spec):
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study, trial, state, values) -> None:
                # a queued retry has no grid_id, which GridSampler.after_trial assumes; our
                # callback stops the study when the grid is used up
                if "fixed_params" not in trial.system_attrs:
                    super().after_trial(study, trial, state, values)

        return Grid(grid_space(spec, base), seed=seed)
    if spec.mode == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver we install: SQLAlchemy 2.1 defaults to psycopg 3."""
    import importlib.util

    if url.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec(
            "psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _redact(url: str) -> str:
    """The storage URL without its password (it is printed in messages)."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}:***@{tail}"


def _counts(trial) -> bool:
    """Whether a trial takes up a configuration: done, running, queued, or crashed (not an
    interrupted or skipped one)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return trial.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def _config_key(trial) -> str:
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    return json.dumps(params, sort_keys=True)


def _is_grid(spec: SweepSpec) -> bool:
    return spec.mode in ("grid", "one-at-a-time")


def _remaining(study, ctx: _Context) -> int:
    """Configurations (grid) or trials (random/tpe) nobody has taken yet."""
    taken = [t for t in study.get_trials(deepcopy=False) if _counts(t)]
    if _is_grid(ctx.spec):
        # running trials that have not suggested yet have no params: count them as one each
        named = {_config_key(t) for t in taken if t.params or "fixed_params" in t.system_attrs}
        return ctx.size - len(named) - sum(1 for t in taken if _config_key(t) == "{}")
    return ctx.size - len(taken)


def _superseded(study, trial, ctx: _Context) -> bool:
    """Whether an earlier trial already has this configuration (grid) or the budget is spent.

    Workers race: two can be handed the same last grid point, or start trials past the budget.
    Deciding by trial number (unique in the storage) lets exactly one of them go on.
    """
    earlier = [t for t in study.get_trials(deepcopy=False)
               if t.number < trial.number and _counts(t)]
    if _is_grid(ctx.spec):
        mine = json.dumps(trial.params, sort_keys=True)
        return any(_config_key(t) == mine for t in earlier)
    retry_of = trial.user_attrs.get("retry_of")
    if retry_of is not None and any(t.user_attrs.get("retry_of") == retry_of for t in earlier):
        return True  # two workers queued the same retry
    return len(earlier) >= ctx.size


def _retry_interrupted(study, trial) -> None:
    """Queue a trial again that stopped without an error of its own (Ctrl-C, killed worker)."""
    if "error" in trial.user_attrs or not trial.params:
        return
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _objective(study, ctx: _Context, console: Console):
    import optuna

    run_fn = ctx.run_fn
    if run_fn is None:
        from reconad.pipeline import run as run_fn

    def objective(trial) -> float:
        if not _is_grid(ctx.spec):
            # draws depend on (seed, trial number) only: reproducible, and no repeats after a
            # resume or between workers, whose samplers would otherwise restart one sequence
            study.sampler = _sampler(ctx.spec, ctx.base, ctx.spec.seed + trial.number)
        started = time.perf_counter()
        try:
            overrides = suggest(trial, ctx.spec, ctx.base)
            if _superseded(study, trial, ctx):
                study.stop()
                raise optuna.TrialPruned("configuration taken by an earlier trial")
            trial.set_user_attr("overrides", overrides)
            config = config_for(ctx.base, overrides)
            trial.set_user_attr("factors", factor_values(ctx.spec, config))
            values: dict[str, list[float | None]] = {m: [] for m in METRICS}
            dirs = []
            for repeat in range(ctx.spec.repeats):
                config = config_for(ctx.base, overrides, seed_offset=repeat)
                config.name = f"{ctx.spec.name}-trial-{trial.number}"
                if ctx.threads and config.train.threads is None:
                    config.train.threads = ctx.threads
                run_dir = ctx.sweep_dir / "runs" / f"trial-{trial.number:04d}-seed-{config.seed}"
                result = run_fn(config, run_dir, progress=False, report=False)
                if (result.metrics.get("training") or {}).get("interrupted"):
                    raise KeyboardInterrupt
                for key, value in metric_values(result.metrics).items():
                    values[key].append(value)
                dirs.append(str(Path(result.run_dir).relative_to(ctx.sweep_dir)))
                trial.set_user_attr("run_dirs", dirs)
            objective_values = values[ctx.spec.objective]
            if any(v is None for v in objective_values):
                raise ReconadError(
                    f"objective {ctx.spec.objective} is undefined for this run (the development "
                    "set lacks normal or anomalous images); use objective: val_loss")
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded as this trial's failure; the sweep goes on
            message = str(exc) if isinstance(exc, ReconadError) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", " ".join(message.split())[:500])
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            raise
        trial.set_user_attr("values", values)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        return summarize(objective_values)["mean"]

    return objective


def _report_trial(study, trial, ctx: _Context, console: Console) -> None:
    from optuna.trial import TrialState

    label = trial_label(ctx.spec, trial.params, trial.user_attrs.get("factors"))
    if trial.state == TrialState.COMPLETE:
        stats = summarize(trial.user_attrs["values"][ctx.spec.objective])
        spread = f" ± {stats['std']:.4f}" if stats["std"] is not None else ""
        console.print(escape(f"trial {trial.number} [{label}]: {ctx.spec.objective} "
                             f"{stats['mean']:.4f}{spread} ({trial.user_attrs['seconds']:.0f} s)"))
    elif trial.state == TrialState.FAIL and "error" in trial.user_attrs:
        console.print(escape(f"trial {trial.number} [{label}] failed: "
                             f"{trial.user_attrs['error']}"), style="red")
    if _remaining(study, ctx) <= 0:
        study.stop()


def _work(ctx: _Context, console: Console | None = None, study=None) -> None:
    """One worker: run trials until the grid or the budget is used up."""
    console = console or Console()
    study = study or _open_study(ctx)
    if _remaining(study, ctx) <= 0 and not study.get_trials(states=_waiting()):
        return
    study.optimize(_objective(study, ctx, console), catch=(Exception,),
                   callbacks=[lambda s, t: _report_trial(s, t, ctx, console)])


def _waiting() -> tuple:
    from optuna.trial import TrialState

    return (TrialState.WAITING,)


def _worker_main(ctx: _Context, index: int) -> None:
    try:
        _work(ctx)
    except KeyboardInterrupt:
        pass
    except ReconadError as exc:
        Console(stderr=True).print(f"error: worker {index}: {exc}")
        raise SystemExit(2) from None


# --------------------------------------------------------------------------- entry point


@dataclass
class SweepResult:
    """What a sweep produced (so far, when other workers are still running)."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    complete: bool
    best: dict[str, Any] | None
    best_config: Path | None
    final_metrics: dict[str, Any] | None


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
                yaml.safe_dump(spec.model_dump(mode="json", exclude={"quick"}), sort_keys=False))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ctx = _Context(spec=spec, base=base, sweep_dir=sweep_dir, storage=storage, size=size,
                   threads=max(1, (cores or 1) // workers) if workers > 1 else None,
                   run_fn=run_fn)

    study = _open_study(ctx)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "FAIL":
            _retry_interrupted(study, trial)
    todo = _remaining(study, ctx) + len(study.get_trials(states=_waiting()))
    what = "configurations" if _is_grid(spec) else "trials"
    console.print(f"sweep {spec.name}: {spec.mode}, {size} {what} × {spec.repeats} seed(s), "
                  f"objective {spec.objective} (dev set); {max(todo, 0)} to run in {sweep_dir}")
    try:
        if todo > 0 and workers == 1:
            _work(ctx, console, study)
        elif todo > 0:
            _run_workers(ctx, min(workers, todo))
    except KeyboardInterrupt:
        write_trials_csv(sweep_dir / "trials.csv", spec, trial_rows(study, spec))
        console.print("[yellow]interrupted: run the same command again to continue[/]")
        raise
    return finish_sweep(study, ctx, console)


def _run_workers(ctx: _Context, workers: int) -> None:
    # spawn, not fork: torch and the database connections do not survive a fork
    mp = multiprocessing.get_context("spawn")
    procs = [mp.Process(target=_worker_main, args=(ctx, i), daemon=False)
             for i in range(workers)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            proc.join()
        raise
    failed = [i for i, p in enumerate(procs) if p.exitcode not in (0, None)]
    if failed:
        raise ReconadError(f"sweep worker(s) {failed} stopped with an error (printed above); "
                           "fix it and run the same command again to continue")


# --------------------------------------------------------------------------- the final run


def finish_sweep(study, ctx: _Context, console: Console) -> SweepResult:
    """Write trials.csv, the table, the plots and the best config; re-evaluate the best
    configuration once on the evaluation set when every trial is done."""
    spec, sweep_dir = ctx.spec, ctx.sweep_dir
    rows = trial_rows(study, spec)
    write_trials_csv(sweep_dir / "trials.csv", spec, rows)
    print_ranking(rows, spec, console)
    plot_sweep(rows, spec, sweep_dir)
    pending = [r for r in rows if r["state"] == "running"] + study.get_trials(states=_waiting())
    complete = not pending and _remaining(study, ctx) <= 0
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


def _final_run(best: dict, config: Config, ctx: _Context, console: Console) -> dict | None:
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


def _reevaluate(best: dict, config: Config, ctx: _Context, console: Console) -> dict | None:
    lock = ctx.sweep_dir / ".final.lock"
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        console.print(f"another process is re-evaluating the best configuration (delete {lock} "
                      "if none is)")
        return None
    try:
        run_fn = ctx.run_fn
        if run_fn is None:
            from reconad.pipeline import run as run_fn
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

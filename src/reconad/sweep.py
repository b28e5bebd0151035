"""``reconad sweep``: hyper-parameter search and repeated seeds on top of Optuna.

Optuna owns the search (grid, random, TPE samplers) and the study storage that makes a sweep
resumable and shareable between worker processes (SQLite in the sweep directory by default, or
any database URL such as ``postgresql://`` for workers on several machines). This module turns
an Optuna trial into reconad runs, ranks configurations on the development set only, and
writes the sweep directory::

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
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reconad.config import Config, config_to_yaml
from reconad.errors import ReconadError
from reconad.sweep_space import (
    BASE_LABEL,
    Choices,
    SweepSpec,
    base_config,
    check_space,
    config_for,
    grid_space,
    load_sweep,
    suggest,
)

METRICS = ("dev_auroc", "dev_ap", "score_gap", "val_loss")
DIRECTIONS = {"dev_auroc": "maximize", "dev_ap": "maximize", "score_gap": "maximize",
              "val_loss": "minimize"}
HEARTBEAT_S, GRACE_S = 20, 120  # a trial silent for GRACE_S is stale (its worker died)
RunFn = Callable[..., Any]  # reconad.pipeline.run or a stand-in with its signature


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
            racing = sqlite or isinstance(exc, sqlalchemy.exc.IntegrityError)
            if attempt == 2 or not racing:
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
        >>> result = run_sweep("one-at-a-time-dense", quick=True)
        >>> result.best["overrides"]
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
    _write_text(sweep_dir / "sweep.yaml",
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


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- results


def factor_values(spec: SweepSpec, config: Config) -> dict[str, Any]:
    """Each factor's value in ``config`` (a bundle: the name of the choice it matches)."""
    data = config.model_dump(mode="json")

    def lookup(key: str) -> Any:
        node: Any = data
        for part in key.split("."):
            node = node[part]
        return node

    values: dict[str, Any] = {}
    for key, factor in spec.space.items():
        if isinstance(factor, Choices) and factor.is_bundle:
            values[key] = next((name for name, sets in factor.choices.items()
                                if all(lookup(k) == v for k, v in sets.items())), BASE_LABEL)
        else:
            values[key] = lookup(key)
    return values


def _fmt(value: Any) -> str:
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
    return ", ".join(f"{n}={_fmt(factors.get(k))}" for n, k in zip(names, varied, strict=True))


def trial_rows(study, spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per trial for trials.csv (skipped duplicates and retried ones left out)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    rows = []
    for t in trials:
        state = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running"}.get(t.state.name)
        if state is None or (state == "failed" and t.number in retried):
            continue
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


def ranked(rows: list[dict[str, Any]], spec: SweepSpec, metric: str | None = None) -> list[dict]:
    """Completed rows, best first by the mean of ``metric`` (default: the objective)."""
    metric = metric or spec.objective
    key = "mean" if metric == spec.objective else metric
    done = [r for r in rows if r["state"] == "complete" and r[key] is not None]
    return sorted(done, key=lambda r: r[key], reverse=DIRECTIONS[metric] == "maximize")


def write_trials_csv(path: Path, spec: SweepSpec, rows: list[dict[str, Any]]) -> None:
    """trials.csv: every parameter and metric of every trial (written atomically)."""
    import csv

    columns = ["trial", "state", "label", *spec.space, "objective", "mean", "std", "ci95_low",
               "ci95_high", "n", *METRICS, "values", "seconds", "run_dirs", "error", "overrides"]
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    os.replace(tmp, path)


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
    _write_text(best_path, f"# best of sweep {spec.name}: trial {best_row['trial']} "
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
        _write_text(ctx.sweep_dir / "best.json", json.dumps(summary, indent=2) + "\n")
    finally:
        lock.unlink(missing_ok=True)
    return summary


# --------------------------------------------------------------------------- plots


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


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    return path


def _ranking_chart(order: list[dict], spec: SweepSpec, metric: str, path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    key = "mean" if metric == spec.objective else metric
    values = [r[key] for r in order][::-1]  # best at the top
    # error bars: half the 95 % interval of the objective over seeds (when repeated)
    errors = [0.0 if r.get("ci95_high") is None or key != "mean"
              else r["ci95_high"] - r["mean"] for r in order][::-1]
    labels = [f"#{r['trial']} {r['label']}"[:60] for r in order][::-1]
    fig = Figure(figsize=(9, 1.5 + 0.28 * len(order)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(range(len(values)), values, xerr=errors if any(errors) else None, color="tab:blue")
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.set_xlabel(f"{metric} (development set){', mean ± 95% CI' if any(errors) else ''}")
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    ax.set_xlim(low - pad if DIRECTIONS[metric] == "maximize" or low < 0 else 0, high + pad)
    ax.set_title(f"{spec.name}: configurations ranked by {metric}")
    return _save(fig, path)


def _factor_plot(points: list[dict], spec: SweepSpec, factor: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    def order(row: dict) -> tuple:
        value = row[factor]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (0, value, "") if numeric else (1, 0, json.dumps(value))

    points = sorted(points, key=order)
    means = [r["mean"] for r in points]
    errors = [0.0 if r["ci95_high"] is None else r["ci95_high"] - r["mean"] for r in points]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(range(len(points)), means, yerr=errors if any(errors) else None, marker="o",
                capsize=3)
    for i, row in enumerate(points):
        if row["label"] == BASE_LABEL:
            ax.plot([i], [row["mean"]], "o", color="tab:red", markersize=9, zorder=5,
                    label="base configuration")
    ax.set_xticks(range(len(points)), [_fmt(r[factor]) for r in points], fontsize=8)
    ax.set_xlabel(factor)
    ax.set_ylabel(f"{spec.objective} (development set)")
    ax.set_title(f"{spec.name}: {factor}, other factors at the base")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)

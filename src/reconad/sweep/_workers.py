"""Running trials: the objective that turns an Optuna trial into reconad runs, the worker
loop, the worker processes, and the loop that goes on until no trial is left to run here.

A worker that dies (killed, out of memory) is reported, its trial is queued again, and a
replacement starts; the other workers go on. Trials left running by dead workers of an earlier
run or another machine are found by :func:`reconad.sweep._trials.fail_dead_trials`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from reconad import pipeline
from reconad.errors import ReconadError
from reconad.sweep._results import METRICS, metric_values, summarize, trial_label
from reconad.sweep._space import config_for, factor_values, suggest
from reconad.sweep._storage import grace_period, heartbeat_interval
from reconad.sweep._study import SweepContext, make_sampler, open_study
from reconad.sweep._trials import (
    fail_dead_trials,
    requeue_stale,
    superseded,
    todo,
    worker_id,
)


def objective(study, ctx: SweepContext):
    """The Optuna objective: train every seed of the trial's configuration, return the mean
    dev objective; the runs' metrics and directories go into the trial's user attributes."""
    import optuna

    run_fn = ctx.run_fn or pipeline.run

    def run_trial(trial) -> float:
        trial.set_user_attr("worker", worker_id())  # how a dead worker's trial is found
        if not ctx.is_grid:
            # draws depend on (seed, trial number) only: reproducible, and no repeats after a
            # resume or between workers, whose samplers would otherwise restart one sequence
            study.sampler = make_sampler(ctx, ctx.spec.seed + trial.number)
        started = time.perf_counter()
        try:
            overrides = suggest(trial, ctx.spec, ctx.base)
            if superseded(study, trial, ctx):
                study.stop()
                raise optuna.TrialPruned("configuration taken by an earlier trial")
            trial.set_user_attr("overrides", overrides)
            config = config_for(ctx.base, overrides)
            trial.set_user_attr("factors", factor_values(ctx.spec, config))
            if "gave_up" in trial.user_attrs:
                raise ReconadError(trial.user_attrs["gave_up"])
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

    return run_trial


def report_trial(study, trial, ctx: SweepContext, console: Console) -> None:
    """Print one line per finished trial; stop the worker when nothing is left to start."""
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
    if todo(study, ctx) <= 0:
        study.stop()


def work(ctx: SweepContext, console: Console | None = None, study=None) -> None:
    """One worker: run trials until the grid or the budget is used up and no retry waits."""
    console = console or Console()
    study = study or open_study(ctx, requeue_stale)
    if todo(study, ctx) <= 0:
        return
    study.optimize(objective(study, ctx), catch=(Exception,),
                   callbacks=[lambda s, t: report_trial(s, t, ctx, console)])


def worker_main(ctx: SweepContext, index: int) -> None:
    """A worker process (spawned): exits 2 after printing a ReconadError."""
    try:
        work(ctx)
    except KeyboardInterrupt:
        pass
    except ReconadError as exc:
        Console(stderr=True).print(f"error: worker {index}: {exc}")
        raise SystemExit(2) from None


def run_trials(study, ctx: SweepContext, workers: int, console: Console) -> None:
    """Run trials until none is left to start; then wait (at most a grace period) for trials
    running elsewhere, taking over those whose worker turns out dead."""
    waited_since = None
    while True:
        for trial in fail_dead_trials(study):
            console.print(escape(f"{_name(ctx, trial)} was left running by a dead worker: "
                                 "queued again"), style="yellow")
        left = todo(study, ctx)
        if left > 0:
            waited_since = None
            if workers == 1:
                work(ctx, console, study)
            else:
                run_pool(study, ctx, min(workers, left), console)
            if todo(study, ctx) >= left and not _running(study):
                return  # no progress (workers refused every trial): finish_sweep reports it
            continue
        running = _running(study)
        if not running:
            return
        if waited_since is None:
            waited_since = time.monotonic()
            console.print(f"waiting for {len(running)} trial(s) running elsewhere (up to "
                          f"{grace_period()} s: a dead worker's trial is then run here)")
        elif time.monotonic() - waited_since > grace_period() + 2 * heartbeat_interval():
            return  # alive elsewhere: finish_sweep says the final run waits for them
        time.sleep(heartbeat_interval())


def _running(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def run_pool(study, ctx: SweepContext, count: int, console: Console) -> None:
    """``count`` worker processes sharing the study; a worker killed by a signal has its
    trial queued again and is replaced while trials are left. Raises ReconadError after all
    stopped when a worker exited with an error."""
    # spawn, not fork: torch and the database connections do not survive a fork
    mp = multiprocessing.get_context("spawn")
    procs: dict[int, multiprocessing.process.BaseProcess] = {}
    errors: list[int] = []

    def start(index: int) -> None:
        procs[index] = mp.Process(target=worker_main, args=(ctx, index), daemon=False)
        procs[index].start()

    for index in range(count):
        start(index)
    started = count
    try:
        while procs:
            multiprocessing.connection.wait([p.sentinel for p in procs.values()])
            for index, proc in list(procs.items()):
                if proc.exitcode is None:
                    continue
                proc.join()
                del procs[index]
                if proc.exitcode == 0:
                    continue
                lost = fail_dead_trials(study, {worker_id(proc.pid)})
                if proc.exitcode > 0:
                    errors.append(index)
                    continue
                console.print(escape(_death_line(ctx, index, proc.pid, -proc.exitcode, lost)),
                              style="red")
                if todo(study, ctx) > 0 and len(procs) < count:
                    start(started)
                    started += 1
    except KeyboardInterrupt:
        for proc in procs.values():
            proc.join()
        raise
    if errors:
        raise ReconadError(f"sweep worker(s) {errors} stopped with an error (printed above); "
                           "fix it and run the same command again to continue")


def _death_line(ctx: SweepContext, index: int, pid: int, signum: int, lost: list) -> str:
    how = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
    trials = ", ".join(_name(ctx, t) for t in lost)
    # Killed between claiming a trial and recording it as its own, a worker leaves a running
    # trial nobody can name yet: it is run again once its heartbeat is stale.
    unnamed = (f"no trial recorded as its own; one it had just claimed is run again once its "
               f"heartbeat is {grace_period()} s old")
    return (f"worker {index} (pid {pid}) died ({how}): "
            + (f"{trials} queued again" if trials else unnamed)
            + "; the other workers go on")


def _name(ctx: SweepContext, trial) -> str:
    """"trial N [label]"; a trial killed before it set its factors shows its raw parameters."""
    if "factors" in trial.user_attrs:
        label = trial_label(ctx.spec, trial.params, trial.user_attrs["factors"])
    else:
        label = ", ".join(f"{k}={v}" for k, v in trial.params.items())
    return f"trial {trial.number}" + (f" [{label}]" if label else "")

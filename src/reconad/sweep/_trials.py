"""Trial bookkeeping: which configurations are taken, which are left, and what becomes of a
trial whose worker stopped without finishing it.

A trial that stopped without an error of its own (Ctrl-C, a worker killed or out of memory) is
queued again with the same parameters (``retry_of`` names it); the retry takes its place in
the table. A configuration whose worker died :data:`MAX_DEATHS` times is not tried again: its
last retry fails at once with that message, so every configuration ends with one result.

Each running trial names its worker (``host:boot-id:pid``). A worker is known dead when the
sweep's own process saw it exit, or when it ran on this machine and its process is gone; a
worker elsewhere is dead when its trial's heartbeat is older than the grace period.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path

from reconad.sweep._storage import grace_period
from reconad.sweep._study import SweepContext

MAX_DEATHS = 3  # worker deaths a configuration may cause before it is recorded as failed


def worker_id(pid: int | None = None) -> str:
    """This machine's name and boot, and a process id (default: this process)."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    boot_id = boot.read_text().strip() if boot.is_file() else ""
    return f"{socket.gethostname()}:{boot_id}:{pid or os.getpid()}"


def worker_is_gone(worker: str) -> bool:
    """Whether ``worker`` (a :func:`worker_id`) ran on this machine and its process is gone."""
    host_boot, _, pid = worker.rpartition(":")
    if host_boot != worker_id().rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def takes_a_configuration(trial) -> bool:
    """Whether a trial takes up a configuration: done, running, queued, or failed with its own
    error (not an interrupted one, nor a skipped duplicate)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return trial.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def config_key(trial) -> str:
    """The configuration of a trial as text ("{}" before it suggested its parameters)."""
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    return json.dumps(params, sort_keys=True)


def waiting_trials(study) -> list:
    """Trials queued and not started yet."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def remaining(study, ctx: SweepContext) -> int:
    """Configurations (grid) or trials (random/tpe) nobody has taken yet."""
    taken = [t for t in study.get_trials(deepcopy=False) if takes_a_configuration(t)]
    if ctx.is_grid:
        # running trials that have not suggested yet have no params: count them as one each
        named = {config_key(t) for t in taken if t.params or "fixed_params" in t.system_attrs}
        return ctx.size - len(named) - sum(1 for t in taken if config_key(t) == "{}")
    return ctx.size - len(taken)


def todo(study, ctx: SweepContext) -> int:
    """Trials left to start: untaken configurations and queued retries."""
    return max(remaining(study, ctx), 0) + len(waiting_trials(study))


def superseded(study, trial, ctx: SweepContext) -> bool:
    """Whether an earlier trial already has this configuration (grid) or the budget is spent.

    Workers race: two can be handed the same last grid point, or start trials past the budget.
    Deciding by trial number (unique in the storage) lets exactly one of them go on.
    """
    earlier = [t for t in study.get_trials(deepcopy=False)
               if t.number < trial.number and takes_a_configuration(t)]
    if ctx.is_grid:
        mine = json.dumps(trial.params, sort_keys=True)
        return any(config_key(t) == mine for t in earlier)
    retry_of = trial.user_attrs.get("retry_of")
    if retry_of is not None and any(t.user_attrs.get("retry_of") == retry_of for t in earlier):
        return True  # two processes queued the same retry
    return len(earlier) >= ctx.size


def _grid_params(study, trial) -> dict:
    """The grid point GridSampler gave a trial that died before suggesting its parameters.

    Asked of the study's own sampler: its ``grid_id`` indexes the sampler's seeded shuffle of
    the grid, not the grid in its written order.
    """
    import optuna

    space, grid_id = trial.system_attrs.get("search_space"), trial.system_attrs.get("grid_id")
    if not space or grid_id is None or not isinstance(study.sampler,
                                                        optuna.samplers.GridSampler):
        return {}
    return {name: study.sampler.sample_independent(
                study, trial, name, optuna.distributions.CategoricalDistribution(values))
            for name, values in space.items()}


def requeue(study, trial, died: bool = False) -> int | None:
    """Queue a trial again that stopped without an error of its own; returns the number it
    replaces, or None when nothing was queued (it failed by itself, or is queued already).

    ``died``: its worker process died (counted toward :data:`MAX_DEATHS`).
    """
    if "error" in trial.user_attrs:
        return None
    params = trial.params or _grid_params(study, trial)
    if not params:
        return None  # random/tpe: not drawn yet, a new draw takes its place
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return None
    deaths = trial.user_attrs.get("deaths", 0) + int(died)
    attrs = {"retry_of": trial.number, "deaths": deaths}
    if deaths >= MAX_DEATHS:
        attrs["gave_up"] = (f"its worker process died {deaths} times while running it (killed, "
                            "or out of memory?); not tried again")
    study.enqueue_trial(params, user_attrs=attrs)
    return trial.number


def requeue_stale(study, trial) -> None:
    """Optuna's heartbeat callback: a trial whose heartbeat stopped was failed; queue it."""
    requeue(study, trial, died=True)


def fail_dead_trials(study, dead_workers: set[str] = frozenset()) -> list:
    """Fail and queue again the running trials of dead workers; returns those trials.

    Dead: a worker in ``dead_workers`` (seen exiting), a worker of this machine whose process
    is gone, a trial whose heartbeat is older than the grace period, or one that never named
    its worker although it started longer than the grace period ago.
    """
    import warnings

    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat; requeue_stale queues them
    now = datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None:
            started = trial.datetime_start or now
            dead = now - started > timedelta(seconds=grace_period())
        else:
            dead = worker in dead_workers or worker_is_gone(worker)
        if dead:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            requeue(study, trial, died=True)
            failed.append(trial)
    return failed

"""``reconad sweep``: hyper-parameter search and repeated seeds on top of Optuna.

Optuna owns the search (grid, random, TPE samplers) and the study storage that makes a sweep
resumable and shareable between worker processes (SQLite in the sweep directory by default, or
any database URL such as ``postgresql://`` for workers on several machines). A worker that dies
(killed, out of memory) loses no trial: its trial is queued again and finished by the other
workers or the next run of the same command. The sweep directory::

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

Modules: ``_spec`` (the sweep file), ``_space`` (search space → Optuna and configs),
``_storage`` (database plumbing, heartbeat), ``_study`` (the Optuna study), ``_trials`` (trial
bookkeeping, dead workers), ``_workers`` (the objective and worker processes), ``_results``
(rows, ranking, table, charts), ``_final`` (best configuration, final re-evaluation), ``_run``
(the entry point).
"""

from reconad.sweep._final import SweepResult, finish_sweep
from reconad.sweep._results import (
    DIRECTIONS,
    METRICS,
    metric_values,
    ranked,
    score_gap,
    summarize,
    trial_rows,
)
from reconad.sweep._run import run_sweep
from reconad.sweep._space import (
    base_config,
    check_space,
    config_for,
    grid_space,
    one_at_a_time_variants,
)
from reconad.sweep._spec import (
    SweepSpec,
    load_sweep,
    sweep_preset_description,
    sweep_preset_names,
)

__all__ = [
    "DIRECTIONS",
    "METRICS",
    "SweepResult",
    "SweepSpec",
    "base_config",
    "check_space",
    "config_for",
    "finish_sweep",
    "grid_space",
    "load_sweep",
    "metric_values",
    "one_at_a_time_variants",
    "ranked",
    "run_sweep",
    "score_gap",
    "summarize",
    "sweep_preset_description",
    "sweep_preset_names",
    "trial_rows",
]

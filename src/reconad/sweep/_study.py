"""The Optuna study behind a sweep: what every process needs to run trials, and the study
itself (its sampler, and the check that a storage holds this sweep and not another)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconad.errors import ReconadError
from reconad.sweep._results import DIRECTIONS
from reconad.sweep._space import grid_space
from reconad.sweep._spec import SweepSpec
from reconad.sweep._storage import create_or_load_study, redact

RunFn = Callable[..., Any]  # reconad.pipeline.run or a stand-in with its signature


@dataclass
class SweepContext:
    """What every worker process needs to run trials (picklable)."""

    spec: SweepSpec
    base: dict[str, Any]
    sweep_dir: Path
    storage: str
    size: int  # grid configurations, or the random/tpe trial budget
    threads: int | None
    run_fn: RunFn | None

    @property
    def is_grid(self) -> bool:
        """Whether the sweep enumerates configurations (grid, one-at-a-time)."""
        return self.spec.mode in ("grid", "one-at-a-time")


def quiet_optuna() -> None:
    """Optuna logs at ERROR only: the sweep prints one line per trial itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(ctx: SweepContext, on_stale_trial: Callable[[Any, Any], None]):
    """Create or load the sweep's study; refuse a storage that holds a different sweep."""
    quiet_optuna()
    spec = ctx.spec
    study = create_or_load_study(ctx.storage, study_name=f"reconad-{spec.name}",
                                 sampler=make_sampler(ctx, spec.seed),
                                 direction=DIRECTIONS[spec.objective],
                                 on_stale_trial=on_stale_trial)
    digest = study.user_attrs.get("reconad_digest")
    if digest is None:
        study.set_user_attr("reconad_digest", spec.digest())
    elif digest != spec.digest():
        raise ReconadError(f"the storage {redact(ctx.storage)} already holds a different sweep "
                           f"named {spec.name!r}; use another --out/--storage, or delete it to "
                           "start over")
    return study


def make_sampler(ctx: SweepContext, seed: int):
    """Grid (grid, one-at-a-time), random or TPE sampler; ``seed`` fixes its draws."""
    import optuna

    if ctx.is_grid:
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study, trial, state, values) -> None:
                """Never stop here: GridSampler stops a worker once no grid point is left
                unvisited, even with retries queued; the sweep's trial callback decides."""

        return Grid(grid_space(ctx.spec, ctx.base), seed=seed)
    if ctx.spec.mode == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

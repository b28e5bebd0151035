"""Sweeps: file validation, space expansion, ranking on dev, repeats, resume, workers."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from reconad.config import load_config
from reconad.errors import ReconadError
from reconad.sweep import (
    base_config,
    check_space,
    load_sweep,
    one_at_a_time_variants,
    ranked,
    run_sweep,
    score_gap,
    summarize,
    sweep_preset_names,
    trial_rows,
)

TINY = ["data.max_train=300", "data.max_test=300", "train.epochs=1", "model.hidden=[32]"]


def write_sweep(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def read_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


class FakeRun:
    """Stands in for reconad.pipeline.run: dev AUROC rises with lr and latent, eval AUROC
    falls with them (so ranking on eval would pick another configuration)."""

    def __init__(self, crash_when=None, interrupt_at_call=None):
        self.calls: list = []
        self.crash_when = crash_when
        self.interrupt_at_call = interrupt_at_call

    @staticmethod
    def dev_auroc(config) -> float:
        return 0.5 + 10 * config.train.lr + config.model.latent / 100 + config.seed / 1000

    def __call__(self, config, out_dir, progress=True, report=True, overwrite=False):
        self.calls.append(config)
        if self.interrupt_at_call == len(self.calls):
            raise KeyboardInterrupt
        if self.crash_when and self.crash_when(config):
            raise RuntimeError("boom")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=overwrite)
        dev = self.dev_auroc(config)
        groups = {"normal": {"n": 10, "mean": 0.1}, "class 8": {"n": 5, "mean": 0.1 + dev}}
        metrics = {
            "training": {"best_val_loss": 1 - dev, "interrupted": False},
            "dev": {"auroc": dev, "average_precision": dev / 2, "groups": groups},
            "eval": {"auroc": 1.5 - dev, "average_precision": 0.1, "groups": groups,
                     "thresholds": {"youden": {"value": 0.2, "f1": 0.5}}},
            "chosen_threshold": "youden",
        }
        (out / "metrics.json").write_text(json.dumps(metrics))
        return SimpleNamespace(run_dir=out, metrics=metrics)


GRID = """
base: holdout-4-8
mode: grid
repeats: {repeats}
space:
  train.lr: [1.0e-3, 1.0e-2]
  model.latent: [4, 8]
"""


# --------------------------------------------------------------------------- the sweep file


def test_unknown_keys_are_named_in_one_line(tmp_path):
    bad = write_sweep(tmp_path / "a.yaml", "mode: grid\nrepeat: 3\nspace: {train.lr: [0.1]}\n")
    with pytest.raises(ReconadError, match=r"unknown key 'repeat' \(a sweep file has: .*repeats"):
        load_sweep(bad)
    bad = write_sweep(tmp_path / "b.yaml",
                      "mode: random\ntrials: 3\nspace: {train.lr: {low: 0.1, high: 1, lgo: true}}")
    with pytest.raises(ReconadError, match=r"unknown key 'space\.train\.lr\.lgo'"):
        load_sweep(bad)


@pytest.mark.parametrize(("space", "message"), [
    ("{train.lrr: [0.1]}", r"unknown config key 'train\.lrr'"),
    ("{train.lr: [0.1, -1]}", r"train\.lr=-1: invalid value for train\.lr"),
    ("{arch: {choices: {big: {model.latnt: 3}}}}", r"unknown config key 'model\.latnt'"),
])
def test_every_searched_key_and_value_is_checked_before_training(tmp_path, space, message):
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", f"base: holdout-4-8\nspace: {space}\n"))
    with pytest.raises(ReconadError, match=message):
        check_space(spec, base_config(spec))


def test_mode_must_fit_the_space(tmp_path):
    cont = write_sweep(tmp_path / "c.yaml", "space: {train.lr: {low: 1.0e-4, high: 0.1}}\n")
    with pytest.raises(ReconadError, match="continuous range.*give a list of values"):
        load_sweep(cont)
    budgetless = write_sweep(tmp_path / "r.yaml", "mode: tpe\nspace: {train.lr: [0.1]}\n")
    with pytest.raises(ReconadError, match="mode tpe needs a trial budget: add trials: N"):
        load_sweep(budgetless)
    with pytest.raises(ReconadError, match="unknown sweep preset 'nope'"):
        load_sweep("nope")


def test_exponent_floats_are_numbers_not_strings(tmp_path):
    # plain PyYAML reads 1e-4 as the string "1e-4"
    spec = load_sweep(write_sweep(tmp_path / "f.yaml", "space: {train.lr: [1e-4, 2.5E-3]}\n"))
    assert spec.space["train.lr"].choices == [1e-4, 2.5e-3]


def test_one_at_a_time_varies_each_factor_around_the_base(tmp_path):
    # holdout-4-8 has lr 1e-4, latent 10, hidden [512, 256]
    spec = load_sweep(write_sweep(tmp_path / "o.yaml", """
base: holdout-4-8
mode: one-at-a-time
space:
  train.lr: [1.0e-3, 1.0e-4]
  model.latent: [10, 20, 30]
  depth: {choices: {shallow: {model.hidden: [64]}, deep: {model.hidden: [512, 256]}}}
"""))
    variants = one_at_a_time_variants(spec, base_config(spec))
    assert variants == {
        "base": {},
        "train.lr=0.001": {"train.lr": 0.001},
        "model.latent=20": {"model.latent": 20},
        "model.latent=30": {"model.latent": 30},
        "depth=shallow": {"model.hidden": [64]},
    }
    assert check_space(spec, base_config(spec)) == 5


def test_presets_are_the_protocol_studies_and_validate_fully():
    assert sweep_preset_names() == ["grid-six-architectures", "one-at-a-time-dense"]
    oat = load_sweep("one-at-a-time-dense")
    assert oat.mode == "one-at-a-time" and oat.objective == "dev_auroc"
    assert set(oat.space) == {"layers", "model.hidden", "model.latent", "train.lr",
                              "train.batch_size", "train.epochs"}
    assert oat.space["model.latent"].choices == [10, 20, 30]
    grid = load_sweep("grid-six-architectures")
    assert grid.objective == "score_gap" and len(grid.space["architecture"].choices) == 6
    for name in sweep_preset_names():
        for quick in (False, True):
            spec = load_sweep(name, quick=quick)
            assert check_space(spec, base_config(spec)) > 1
    assert check_space(grid, base_config(grid)) == 6 * 2 * 2 * 2 * 2
    assert load_sweep("grid-six-architectures", quick=True).name.endswith("-quick")


# --------------------------------------------------------------------------- statistics


def test_summary_uses_the_student_t_interval():
    stats = summarize([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t(0.975, 3 dof) from tables, s² = 5/3
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))
    assert (stats["ci95_low"], stats["ci95_high"]) == pytest.approx((2.5 - half, 2.5 + half))
    assert summarize([0.7]) == {"mean": 0.7, "std": None, "ci95_low": None, "ci95_high": None,
                                "n": 1}


def test_score_gap_pools_anomaly_groups_weighted_by_size():
    groups = {"normal": {"n": 10, "mean": 0.1}, "class 8": {"n": 30, "mean": 0.5},
              "class 4": {"n": 10, "mean": 0.3}}
    assert score_gap(groups) == pytest.approx((30 * 0.5 + 10 * 0.3) / 40 - 0.1)
    assert score_gap({"normal": {"n": 10, "mean": 0.1}}) is None


# --------------------------------------------------------------------------- running sweeps


def test_grid_with_repeats_ranks_on_dev_means_and_reevaluates_the_best(tmp_path):
    fake = FakeRun()
    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=3))
    result = run_sweep(source, out=tmp_path / "sw", run_fn=fake)

    rows = read_rows(tmp_path / "sw")
    assert len(rows) == 4 and {r["state"] for r in rows} == {"complete"}
    combos = {(float(r["train.lr"]), int(r["model.latent"])) for r in rows}
    assert combos == {(1e-3, 4), (1e-3, 8), (1e-2, 4), (1e-2, 8)}
    for row in rows:
        seeds = [load_config("holdout-4-8").seed + i for i in range(3)]
        expected = [0.5 + 10 * float(row["train.lr"]) + int(row["model.latent"]) / 100
                    + s / 1000 for s in seeds]
        assert float(row["mean"]) == pytest.approx(np.mean(expected))
        assert float(row["std"]) == pytest.approx(np.std(expected, ddof=1))
        assert row["n"] == "3" and len(row["run_dirs"].split(";")) == 3
    assert len(fake.calls) == 4 * 3 + 1  # every seed of every configuration, then the final run
    assert sorted(p.name for p in (tmp_path / "sw/runs").iterdir())[:3] == [
        "trial-0000-seed-0", "trial-0000-seed-1", "trial-0000-seed-2"]

    # dev ranks lr=0.01, latent 8 first; eval (never looked at by the sweep) would rank it last
    assert result.best["overrides"] == {"train.lr": 0.01, "model.latent": 8}
    assert result.best["label"] == "lr=0.01, latent=8"
    best = load_config(tmp_path / "sw/best_config.yaml")
    assert (best.train.lr, best.model.latent, best.seed) == (0.01, 8, 0)
    assert fake.calls[-1] == best
    final = json.loads((tmp_path / "sw/best.json").read_text())
    assert final["eval"]["auroc"] == pytest.approx(1.5 - FakeRun.dev_auroc(best))
    assert result.final_metrics == final
    for chart in ("ranking-dev_auroc.png", "ranking-score_gap.png", "ranking-val_loss.png"):
        assert (tmp_path / "sw" / chart).stat().st_size > 1000


def test_crashed_trial_is_recorded_and_a_rerun_does_nothing_again(tmp_path):
    fake = FakeRun(crash_when=lambda c: c.train.lr == 0.01 and c.model.latent == 4)
    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1))
    run_sweep(source, out=tmp_path / "sw", run_fn=fake)
    rows = {(r["train.lr"], r["model.latent"]): r for r in read_rows(tmp_path / "sw")}
    assert rows["0.01", "4"]["state"] == "failed"
    assert rows["0.01", "4"]["error"] == "RuntimeError: boom"
    assert sum(r["state"] == "complete" for r in rows.values()) == 3
    assert len(fake.calls) == 4 + 1

    again = FakeRun()
    result = run_sweep(source, out=tmp_path / "sw", run_fn=again)
    assert again.calls == []  # finished, failed and final runs are all kept
    assert [r["state"] for r in result.rows].count("failed") == 1


def test_interrupted_sweep_continues_where_it_stopped(tmp_path):
    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(source, out=tmp_path / "sw", run_fn=FakeRun(interrupt_at_call=3))
    states = [r["state"] for r in read_rows(tmp_path / "sw")]
    assert states == ["complete", "complete", "interrupted"]

    resumed = FakeRun()
    result = run_sweep(source, out=tmp_path / "sw", run_fn=resumed)
    assert len(resumed.calls) == 2 + 1  # the interrupted and the untouched one, then the final
    rows = read_rows(tmp_path / "sw")
    assert [r["state"] for r in rows] == ["complete"] * 4
    assert len({(r["train.lr"], r["model.latent"]) for r in rows}) == 4
    assert result.complete


@pytest.mark.parametrize("mode", ["random", "tpe"])
def test_trial_budget_is_exact_across_a_resume(tmp_path, mode):
    source = write_sweep(tmp_path / "r.yaml", f"""
base: holdout-4-8
mode: {mode}
trials: 5
space:
  train.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}
  model.latent: {{low: 2, high: 64}}
  model.activation: [relu, tanh]
""")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(source, out=tmp_path / "sw", run_fn=FakeRun(interrupt_at_call=3))
    run_sweep(source, out=tmp_path / "sw", run_fn=FakeRun())
    rows = read_rows(tmp_path / "sw")
    assert [r["state"] for r in rows] == ["complete"] * 5
    lrs = [float(r["train.lr"]) for r in rows]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and len(set(lrs)) == 5
    assert all(2 <= int(r["model.latent"]) <= 64 for r in rows)
    assert {r["model.activation"] for r in rows} <= {"relu", "tanh"}


def test_one_at_a_time_sweep_plots_each_factor(tmp_path):
    source = write_sweep(tmp_path / "o.yaml", """
base: holdout-4-8
mode: one-at-a-time
objective: val_loss
space:
  train.lr: [1.0e-3, 1.0e-2]
  model.latent: [4, 10]
""")
    result = run_sweep(source, out=tmp_path / "sw", run_fn=FakeRun())
    assert sorted(r["label"] for r in result.rows) == [
        "base", "model.latent=4", "train.lr=0.001", "train.lr=0.01"]
    # val_loss is minimised: the fake's loss is 1 - dev AUROC, lowest for lr 0.01
    assert result.best["overrides"] == {"train.lr": 0.01}
    for factor in ("train.lr", "model.latent"):
        assert (tmp_path / "sw" / f"oat-{factor}.png").stat().st_size > 1000


def test_undefined_objective_fails_the_trial_with_the_fix(tmp_path):
    class NoAnomalies(FakeRun):
        def __call__(self, config, out_dir, **kwargs):
            result = super().__call__(config, out_dir, **kwargs)
            result.metrics["dev"]["auroc"] = None
            return result

    source = write_sweep(tmp_path / "u.yaml", "base: holdout-4-8\nspace: {model.latent: [4]}")
    result = run_sweep(source, out=tmp_path / "sw", run_fn=NoAnomalies())
    assert result.best is None
    assert "use objective: val_loss" in result.rows[0]["error"]


def test_another_sweep_in_the_same_directory_is_refused(tmp_path):
    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1))
    run_sweep(source, out=tmp_path / "sw", run_fn=FakeRun())
    write_sweep(source, GRID.format(repeats=2))
    with pytest.raises(ReconadError, match="already holds a different sweep named 'g'"):
        run_sweep(source, out=tmp_path / "sw", run_fn=FakeRun())


# --------------------------------------------------------------------------- the real pipeline


@pytest.mark.slow
def test_real_sweep_scores_match_each_run_directory(tmp_path, mnist_dir):
    source = write_sweep(tmp_path / "t.yaml", f"""
base: holdout-4-8
set: {json.dumps(TINY)}
mode: one-at-a-time
space:
  train.lr: [1.0e-2]
""")
    result = run_sweep(source, out=tmp_path / "sw", data_dir=mnist_dir)
    rows = read_rows(tmp_path / "sw")
    assert sorted(r["label"] for r in rows) == ["base", "train.lr=0.01"]
    for row in rows:
        run_dir = tmp_path / "sw" / row["run_dirs"]
        with (run_dir / "scores.csv").open() as handle:
            dev = [r for r in csv.DictReader(handle) if r["set"] == "dev"]
        oracle = roc_auc_score([int(r["is_anomaly"]) for r in dev],
                               [float(r["score"]) for r in dev])
        assert float(row["dev_auroc"]) == pytest.approx(oracle, abs=1e-9)
        assert load_config(run_dir / "config.yaml").train.lr == float(row["train.lr"])
    assert result.complete and (tmp_path / "sw/best/metrics.json").is_file()
    assert load_config(tmp_path / "sw/best_config.yaml").train.lr == pytest.approx(
        float(next(r for r in rows if r["trial"] == str(result.best["trial"]))["train.lr"]))


@pytest.mark.slow
def test_two_worker_processes_share_the_sqlite_study(tmp_path, mnist_dir):
    source = write_sweep(tmp_path / "w.yaml", f"""
base: holdout-4-8
set: {json.dumps(TINY)}
space:
  model.latent: [4, 8]
""")
    out = subprocess.run(
        [sys.executable, "-m", "reconad", "sweep", str(source), "--workers", "2",
         "--out", str(tmp_path / "sw"), "--data-dir", str(mnist_dir)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = read_rows(tmp_path / "sw")
    assert sorted(int(r["model.latent"]) for r in rows) == [4, 8]
    assert {r["state"] for r in rows} == {"complete"}
    runs = sorted(p.name for p in (tmp_path / "sw/runs").iterdir())
    assert len(runs) == 2 and runs == sorted(r["run_dirs"].split("/")[-1] for r in rows)
    assert (tmp_path / "sw/best.json").is_file()


def test_only_a_lost_table_creation_race_is_retried():
    import sqlalchemy.exc

    from reconad.sweep._storage import lost_creation_race

    def error(kind, message):
        return kind("CREATE TYPE studydirection", {}, Exception(message))

    # two workers creating Optuna's tables in a fresh PostgreSQL database at once
    assert lost_creation_race(error(sqlalchemy.exc.ProgrammingError,
                                     'type "studydirection" already exists'))
    assert lost_creation_race(error(sqlalchemy.exc.IntegrityError, "duplicate key value"))
    # real failures are reported at once
    assert not lost_creation_race(error(sqlalchemy.exc.ProgrammingError,
                                         'permission denied for schema public'))
    assert not lost_creation_race(error(sqlalchemy.exc.OperationalError, "connection refused"))


def test_unreachable_storage_is_one_line_without_the_password(tmp_path):
    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1))
    url = "postgresql://me:secret@127.0.0.1:1/sweeps"
    with pytest.raises(ReconadError, match=r"cannot open the sweep storage "
                       r"postgresql\S*://me:\*\*\*@127\.0\.0\.1:1/sweeps .*check the URL") as err:
        run_sweep(source, out=tmp_path / "sw", storage=url, run_fn=FakeRun())
    assert "secret" not in str(err.value)


def test_cli_lists_presets_and_reports_bad_files_in_one_line(tmp_path):
    listed = subprocess.run([sys.executable, "-m", "reconad", "sweeps"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == sweep_preset_names()
    bad = write_sweep(tmp_path / "bad.yaml", "space: {train.lr: [0.1]}\nworkers: 2\n")
    out = subprocess.run([sys.executable, "-m", "reconad", "sweep", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: sweep file") and "unknown key 'workers'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- dead workers
# A worker killed mid-trial (SIGKILL, out of memory) loses no trial: its trial is failed and
# queued again, the survivors (or the next run of the same command) finish it, and every
# configuration ends with exactly one complete result.

KILLABLE = f"""
base: holdout-4-8
set: {json.dumps(TINY)}
space:
  model.latent: [4, 8, 16]
"""
SHORT_GRACE = {"RECONAD_SWEEP_GRACE_S": "3"}  # a dead trial without heartbeat is stale after 3 s


def sweep_argv(source: Path, out: Path, mnist_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reconad", "sweep", str(source), "--workers", "2",
            "--out", str(out), "--data-dir", str(mnist_dir), *extra]


def study_trials(storage: str, name: str) -> list:
    """The trials of sweep ``name`` in ``storage`` ([] while the study does not exist yet)."""
    import optuna

    from reconad.sweep._storage import with_driver

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=f"reconad-{name}",
                                 storage=with_driver(storage)).get_trials()
    except Exception:  # tables or study not created yet, or the database busy for a moment
        return []


def wait_for_running_trials(storage: str, name: str, count: int, proc, timeout=240.0) -> None:
    """Return once ``count`` trials run at the same time (each worker is then mid-trial)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        if sum(t.state.name == "RUNNING" for t in study_trials(storage, name)) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"never saw {count} trials running at once")


def worker_pids(parent: int) -> list[int]:
    """The ``multiprocessing`` spawn children of ``parent`` (the sweep workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def check_each_configuration_once(sweep_dir: Path, storage: str, name: str,
                                  latents: list[int]) -> None:
    """trials.csv and the study hold one complete trial per configuration, the killed trial
    failed; the ranking is by the dev AUROC each run directory's scores give."""
    rows = read_rows(sweep_dir)
    assert sorted(int(r["model.latent"]) for r in rows) == latents
    assert {r["state"] for r in rows} == {"complete"}
    trials = study_trials(storage, name)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(json.loads(t.params["model.latent"]) for t in done) == latents
    assert any(t.state.name == "FAIL" for t in trials)  # the killed one, superseded by a retry
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    for row in rows:
        with (sweep_dir / row["run_dirs"] / "scores.csv").open() as handle:
            dev = [r for r in csv.DictReader(handle) if r["set"] == "dev"]
        oracle = roc_auc_score([int(r["is_anomaly"]) for r in dev],
                               [float(r["score"]) for r in dev])
        assert float(row["dev_auroc"]) == pytest.approx(oracle, abs=1e-9)
    top = max(rows, key=lambda r: float(r["dev_auroc"]))
    best = json.loads((sweep_dir / "best.json").read_text())
    assert best["trial"] == int(top["trial"])
    assert load_config(sweep_dir / "best_config.yaml").model.latent == int(top["model.latent"])


def kill_one_worker_mid_trial(tmp_path: Path, mnist_dir: Path, storage: str | None) -> None:
    """``reconad sweep --workers 2`` with one worker SIGKILLed while both run a trial."""
    source = write_sweep(tmp_path / "kill.yaml", KILLABLE)
    out = tmp_path / "sw"
    extra = ["--storage", storage] if storage else []
    storage = storage or f"sqlite:///{out.resolve() / 'study.db'}"
    proc = subprocess.Popen(sweep_argv(source, out, mnist_dir, *extra), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **SHORT_GRACE})
    try:
        wait_for_running_trials(storage, "kill", 2, proc)
        victims = worker_pids(proc.pid)
        assert len(victims) == 2, victims
        os.kill(victims[0], signal.SIGKILL)
        output = proc.communicate(timeout=300)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, output  # the survivors went on; the parent did not give up
    assert "died (SIGKILL)" in output, output  # the dead worker is reported
    # Its trial is queued again at once, or (when the kill lands while the worker is between
    # claiming a trial and recording it as its own) re-run by a survivor once its heartbeat is
    # stale: either way every configuration completes exactly once.
    assert "queued again" in output or "is run again once its heartbeat is" in output, output
    check_each_configuration_once(out, storage, "kill", [4, 8, 16])


@pytest.mark.slow
def test_sigkilled_worker_loses_no_trial_on_sqlite(tmp_path, mnist_dir):
    kill_one_worker_mid_trial(tmp_path, mnist_dir, storage=None)


@pytest.mark.slow
def test_rerun_finishes_a_sweep_whose_every_process_was_killed(tmp_path, mnist_dir):
    source = write_sweep(tmp_path / "kill.yaml", KILLABLE)
    out = tmp_path / "sw"
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    env = {**os.environ, **SHORT_GRACE}
    proc = subprocess.Popen(sweep_argv(source, out, mnist_dir), text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for_running_trials(storage, "kill", 2, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and both workers, mid-trial
        proc.communicate(timeout=60)
    assert sum(t.state.name == "RUNNING" for t in study_trials(storage, "kill")) == 2

    again = subprocess.run(sweep_argv(source, out, mnist_dir), capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    check_each_configuration_once(out, storage, "kill", [4, 8, 16])


# A process killed at an exact point of a trial's life: the trial is created (RUNNING, no
# parameters) before the grid sampler picks its point, the point is picked before the objective
# suggests it, and the parameters are suggested before the trial is run.
KILL_AT = {
    "claimed": "optuna.samplers.GridSampler.before_trial",  # a trial without any parameters
    "drawn": "reconad.sweep._workers.suggest",  # grid point chosen, not suggested yet
    "suggested": "reconad.sweep._workers.superseded",  # parameters suggested, run not started
}
KILL_SCRIPT = """
import importlib, os, signal, sys
from pathlib import Path
from reconad.sweep import run_sweep
owner, _, name = sys.argv[1].rpartition(".")
try:
    target = importlib.import_module(owner)
except ModuleNotFoundError:  # a class attribute: module.Class.method
    module, _, cls = owner.rpartition(".")
    target = getattr(importlib.import_module(module), cls)
setattr(target, name, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
run_sweep(sys.argv[2], out=sys.argv[3], data_dir=sys.argv[4])
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_AT))
def test_rerun_finishes_a_sweep_killed_at_each_point_of_a_trial(tmp_path, mnist_dir, point):
    """Regression: a trial killed after it was created but before it had parameters became a
    parameterless "interrupted" row of trials.csv. Killed exactly there (and at the next two
    points), the same command run again completes every configuration exactly once."""
    source = write_sweep(tmp_path / "kill.yaml", KILLABLE)
    out = tmp_path / "sw"
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    env = {**os.environ, **SHORT_GRACE}
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, KILL_AT[point], str(source),
                             str(out), str(mnist_dir)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    left = study_trials(storage, "kill")
    assert [t.state.name for t in left] == ["RUNNING"]
    assert bool(left[0].params) == (point == "suggested")
    assert ("grid_id" in left[0].system_attrs) == (point != "claimed")

    again = subprocess.run(sweep_argv(source, out, mnist_dir), capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    check_each_configuration_once(out, storage, "kill", [4, 8, 16])


def test_trial_of_a_worker_dead_elsewhere_is_rerun_after_the_grace_period(tmp_path,
                                                                          monkeypatch):
    """A trial left running by a worker on another machine that stopped beating is failed
    once its heartbeat is older than the grace period, queued again and run here; the final
    re-evaluation does not wait for it forever."""
    monkeypatch.setenv("RECONAD_SWEEP_GRACE_S", "2")
    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1))
    (tmp_path / "sw").mkdir()
    left_running_elsewhere(f"sqlite:///{(tmp_path / 'sw').resolve() / 'study.db'}", source)

    fake = FakeRun()
    started = time.monotonic()
    result = run_sweep(source, out=tmp_path / "sw", run_fn=fake)
    assert time.monotonic() - started < 60
    assert result.complete and result.final_metrics is not None
    rows = read_rows(tmp_path / "sw")
    assert sorted((r["train.lr"], r["model.latent"]) for r in rows) == [
        ("0.001", "4"), ("0.001", "8"), ("0.01", "4"), ("0.01", "8")]
    assert {r["state"] for r in rows} == {"complete"} and "0" not in [r["trial"] for r in rows]
    assert len(fake.calls) == 4 + 1


def left_running_elsewhere(storage: str, source: Path, deaths: int = 0) -> None:
    """A study in which a worker on another machine took lr=0.01, latent=8, beat once, and
    died; ``deaths``: how many earlier workers died on that configuration."""
    import optuna

    rdb = optuna.storages.RDBStorage(storage)
    study = optuna.create_study(storage=rdb, study_name=f"reconad-{source.stem}",
                                direction="maximize")
    study.set_user_attr("reconad_digest", load_sweep(source).digest())
    study.enqueue_trial({"model.latent": "8", "train.lr": "0.01"})
    trial = study.ask()
    trial.suggest_categorical("model.latent", ["4", "8"])
    trial.suggest_categorical("train.lr", ["0.001", "0.01"])
    trial.set_user_attr("worker", "elsewhere:boot:4242")
    if deaths:
        trial.set_user_attr("deaths", deaths)
    rdb.record_heartbeat(trial._trial_id)


def test_configuration_that_kills_its_workers_is_failed_after_three_deaths(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("RECONAD_SWEEP_GRACE_S", "2")
    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1))
    (tmp_path / "sw").mkdir()
    left_running_elsewhere(f"sqlite:///{(tmp_path / 'sw').resolve() / 'study.db'}", source,
                           deaths=2)
    fake = FakeRun()
    result = run_sweep(source, out=tmp_path / "sw", run_fn=fake)
    rows = {(r["train.lr"], r["model.latent"]): r for r in read_rows(tmp_path / "sw")}
    assert len(rows) == 4
    assert rows["0.01", "8"]["state"] == "failed"
    assert "worker process died 3 times" in rows["0.01", "8"]["error"]
    assert sum(r["state"] == "complete" for r in rows.values()) == 3
    assert len(fake.calls) == 3 + 1  # never run again; the other three, then the final run
    assert result.complete and result.best["overrides"] == {"train.lr": 0.01, "model.latent": 4}


def test_a_configuration_completed_twice_is_ranked_once(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution

    spec = load_sweep(write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1)))
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate((0.7, 0.9, 0.6)):
        latent = "4" if number < 2 else "8"  # trials 0 and 1: the same configuration
        study.add_trial(optuna.create_trial(
            params={"model.latent": latent, "train.lr": "0.01"},
            distributions={"model.latent": CategoricalDistribution(["4", "8"]),
                           "train.lr": CategoricalDistribution(["0.001", "0.01"])},
            value=value,
            user_attrs={"values": {"dev_auroc": [value]}, "factors": {"model.latent": int(latent),
                        "train.lr": 0.01}, "overrides": {"model.latent": int(latent)}}))
    rows = trial_rows(study, spec)
    assert [r["trial"] for r in rows] == [0, 2]
    assert [r["trial"] for r in ranked(rows, spec)] == [0, 2]


def test_final_run_lock_of_a_dead_process_is_taken_over(tmp_path):
    from reconad.sweep._trials import worker_id

    source = write_sweep(tmp_path / "g.yaml", GRID.format(repeats=1))
    run_sweep(source, out=tmp_path / "sw", run_fn=FakeRun())
    # the final run was killed: its lock stayed behind, best.json was never written
    (tmp_path / "sw/best.json").unlink()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "sw/.final.lock").write_text(worker_id(gone.pid))
    again = FakeRun()
    result = run_sweep(source, out=tmp_path / "sw", run_fn=again)
    assert len(again.calls) == 1 and result.final_metrics is not None
    assert (tmp_path / "sw/best.json").is_file() and not (tmp_path / "sw/.final.lock").exists()

    # a lock held by a live process is respected
    (tmp_path / "sw/best.json").unlink()
    (tmp_path / "sw/.final.lock").write_text(worker_id())
    held = FakeRun()
    assert run_sweep(source, out=tmp_path / "sw", run_fn=held).final_metrics is None
    assert held.calls == []


def test_death_line_names_the_lost_trial_or_says_when_an_unnamed_one_is_run_again(monkeypatch):
    """The parent's line for a killed worker: its own trial queued again, or, when the kill
    landed before the worker recorded a trial as its own, when that trial is run again."""
    from types import SimpleNamespace

    from reconad.sweep._workers import _death_line

    monkeypatch.setenv("RECONAD_SWEEP_GRACE_S", "7")
    trial = SimpleNamespace(number=3, params={"model.latent": 8}, user_attrs={})
    named = _death_line(None, 1, 4242, signal.SIGKILL, [trial])
    assert named == ("worker 1 (pid 4242) died (SIGKILL): trial 3 [model.latent=8] queued "
                     "again; the other workers go on")
    unnamed = _death_line(None, 0, 4243, signal.SIGKILL, [])
    assert "no trial recorded as its own" in unnamed
    assert "run again once its heartbeat is 7 s old" in unnamed

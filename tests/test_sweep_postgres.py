"""Distributed sweep in a real PostgreSQL server: two `reconad sweep` commands share one study,
and a worker SIGKILLed mid-trial loses no trial."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from test_sweep import kill_one_worker_mid_trial

TINY = ["data.max_train=300", "data.max_test=300", "train.epochs=1", "model.hidden=[32]"]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 with an empty database; stopped afterwards."""
    bindir = _pg_bin()
    require_tool(bindir is not None, "PostgreSQL server binaries (initdb, pg_ctl) not found; "
                                     "apt-get install postgresql")
    # postgres refuses to run as root: run the server as the postgres user, in a folder it owns
    # (pytest's tmp_path lies under a root-only directory)
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    home = Path(tempfile.mkdtemp(prefix="reconad-pg-"))
    data = home / "data"
    if as_root:
        shutil.chown(home, "postgres")
    port = _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-w",
           "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        try:
            pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
               "sweeps")
            yield f"postgresql://postgres@127.0.0.1:{port}/sweeps"
        finally:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.postgres
def test_two_workers_share_one_study_and_run_every_trial_once(tmp_path, mnist_dir,
                                                             postgres_url):
    source = tmp_path / "tiny.yaml"
    source.write_text(f"""
base: holdout-4-8
set: {json.dumps(TINY)}
space:
  model.latent: [4, 8]
  train.lr: [1.0e-3, 1.0e-2]
""")
    # the same command on two "machines": each with its own sweep directory, one shared study
    workers = [
        subprocess.Popen([sys.executable, "-m", "reconad", "sweep", str(source), "--storage",
                          postgres_url, "--out", str(tmp_path / f"machine{i}"), "--data-dir",
                          str(mnist_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=180)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    runs = [p.name for i in range(2) for p in (tmp_path / f"machine{i}/runs").glob("trial-*")]
    assert len(runs) == 4 and len(set(runs)) == 4  # every trial ran once, on one machine
    configs = set()
    for i in range(2):
        for run in (tmp_path / f"machine{i}/runs").glob("trial-*"):
            text = (run / "config.yaml").read_text()
            configs.add(next(line for line in text.splitlines() if "latent:" in line)
                        + next(line for line in text.splitlines() if "  lr:" in line))
    assert len(configs) == 4  # ... and no configuration twice

    # the machine that saw the study finish wrote the complete table and re-evaluated the best
    finished = [tmp_path / f"machine{i}" for i in range(2)
                if (tmp_path / f"machine{i}/best.json").is_file()]
    assert finished, outputs
    for sweep_dir in finished:
        with (sweep_dir / "trials.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert sorted((r["model.latent"], r["train.lr"]) for r in rows) == [
            ("4", "0.001"), ("4", "0.01"), ("8", "0.001"), ("8", "0.01")]
        assert {r["state"] for r in rows} == {"complete"}
        assert sorted(r["trial"] for r in rows) == ["0", "1", "2", "3"]


@pytest.mark.postgres
def test_sigkilled_worker_loses_no_trial_on_postgresql(tmp_path, mnist_dir, postgres_url):
    kill_one_worker_mid_trial(tmp_path, mnist_dir, storage=postgres_url)

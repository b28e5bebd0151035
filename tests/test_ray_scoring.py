"""`reconad score --engine ray`: a local 2-worker Ray gives the single-process rows exactly."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys

import numpy as np
import pytest
from conftest import require_tool
from scoring_fixtures import SIDE, image_folder, train_tiny_detector

from reconad.data import open_collection
from reconad.detector import Detector
from reconad.engines import COLUMNS, score_collection
from reconad.errors import ReconadError

# Nothing may reach the network: no usage stats, no uv runtime env, no dashboard.
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the module (start-up takes tens of seconds)."""
    require_tool(importlib.util.find_spec("ray") is not None,
                 'ray is not installed (pip install "reconad[ray]")')
    os.environ.update(QUIET_RAY)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.ray
def test_ray_scores_a_folder_like_the_single_process_engine(local_ray, tmp_path):
    import pyarrow.parquet as pq

    from reconad.engines import score_on_ray

    det_path = train_tiny_detector(tmp_path)
    det = Detector.load(det_path)
    root = image_folder(tmp_path / "photos", n_per_class=10, side=20)
    (root / "bad" / "broken.png").write_text("not an image")
    coll = open_collection(root, det.input_shape_, resize=(SIDE, SIDE))
    local = score_collection(det, coll, tmp_path / "local.csv", batch_size=8, skip_bad=True)

    out = tmp_path / "ray"
    summary = score_on_ray(det_path, coll, out, batch_size=8, workers=2, skip_bad=True,
                           gallery=tmp_path / "g.png", gallery_k=3)
    assert local_ray.is_initialized()  # joined the running Ray, left it running
    expected, got = read_rows(tmp_path / "local.csv"), read_rows(out / "scores.csv")
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    assert len(got) == 30 and got[0]["id"] == "bad/000.png"
    np.testing.assert_allclose([float(r["score"]) for r in got],
                               [float(r["score"]) for r in expected], rtol=1e-4, atol=1e-6)
    for key in ("label", "class", "flag"):
        assert [r[key] for r in got] == [r[key] for r in expected]
    assert summary.skipped == local.skipped and summary.skipped[0][0] == "bad/broken.png"
    assert (summary.n_scored, summary.n_flagged) == (local.n_scored, local.n_flagged)
    shards = sorted((out / "parquet").glob("*.parquet"))
    assert len(shards) >= 2  # written by the workers, block by block
    table = pq.read_table(out / "parquet")
    assert table.column_names == list(COLUMNS)
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in expected)
    assert (tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ReconadError, match=r"broken\.png is not an image"):
        score_on_ray(det_path, coll, tmp_path / "again.csv", batch_size=8, workers=2)
    assert not (tmp_path / "again.csv").exists()


def test_engine_ray_without_ray_names_the_extra(monkeypatch):
    from reconad.engines import _ray as ray_scoring

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ReconadError, match=r'pip install "reconad\[ray\]"'):
        ray_scoring._import_ray()


@pytest.mark.parametrize(("device", "cluster_gpus", "gpus", "pool"), [
    ("cpu", 4.0, 0, 3),   # a CPU scorer never holds a GPU
    ("auto", 0.0, 0, 3),  # auto on a cluster without GPUs: CPU actors
    ("auto", 2.0, 1, 2),  # auto where the cluster has GPUs: one actor per GPU
    ("cuda", 0.0, 1, 3),  # asked for: reserved (Ray waits for a GPU node)
])
def test_actors_choose_the_device_from_the_cluster_not_the_driver(device, cluster_gpus, gpus,
                                                                  pool):
    require_tool(importlib.util.find_spec("ray") is not None,
                 'ray is not installed (pip install "reconad[ray]")')
    from reconad.engines import actor_resources

    got = actor_resources(device, 3, None, cluster_gpus)
    assert got["num_gpus"] == gpus
    assert got["compute"].min_size == got["compute"].max_size == pool


def test_an_unknown_device_is_refused_before_ray_starts(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "reconad", "score",
                           str(tmp_path / "d.safetensors"), str(tmp_path), "--engine", "ray",
                           "--device", "tpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: unknown device 'tpu'; choose one of auto, cpu, cuda, mps")

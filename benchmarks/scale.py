"""Memory and speed at scale: scoring and training on collections larger than their float32 form.

Every measurement runs in its own subprocess (``python -m benchmarks.scale --probe ...``) that
reports its wall time and its peak resident memory (``VmHWM`` in /proc/self/status), so one
measurement's memory never hides another's. Side by side in one run:

- scoring speed of the ``default`` detector on N 28x28 images from a ``.npy``: the whole
  ``reconad score`` command vs a bare forward pass of the detector's own network over the
  same images (``score_over_forward``: the fraction of the bare speed the command keeps);
- peak RSS of ``reconad score`` on N and 10 N images (a memory-mapped ``.npy``;
  ``rss_ratio_10x``, target <= 1.2) and on folders of P and 10 P PNGs (P = 10,000; quick 1,000);
- ``reconad score --engine ray`` with 1 and 2 local workers on the N images: wall time, and the
  largest relative difference of its scores from the plain ``reconad score``'s;
- ``reconad run default`` (``--set train.epochs=1``): peak RSS and the time outside training;
- images/s of a plain dense and a conv autoencoder inside the scoring loop
  (:func:`reconad.score.score_images` over the memory-mapped images);
- training streamed (``data.stream=true``, the ``.npy`` read batch by batch) vs in memory on
  the same images (corruption scenario: the ``.npy`` is unlabelled): seconds per epoch, peak
  RSS and dev AUROC.

N = 60,000 (MNIST's training images; 10 N repeats them); ``--quick``: N = 6,000. Every
measurement uses the same torch threads: all cores, or one with ``--quick`` (made for shared
machines, where two threads competing with other work run several times slower than one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import Context

REPO = Path(__file__).resolve().parents[1]
THREADS_ENV = "RECONAD_SCALE_THREADS"
FULL_N, QUICK_N = 60_000, 6_000
FULL_PNGS, QUICK_PNGS = 10_000, 1_000  # and a folder of 10 times as many (copies of these)
# reconad run default, quick: a subset, as every --quick benchmark (see common.QUICK_OVERRIDES)
QUICK_RUN = ["data.max_train=6000", "data.max_test=2000"]
# streamed vs in-memory training: unlabelled .npy, so corrupted copies are the anomalies and
# there is no class head; the default preset's model otherwise.
STREAM_RUN = ["scenario.kind=corruption", "scenario.noise=gaussian", "scenario.noise_level=0.2",
              "model.class_head=false", "score.parts=[recon,latent_knn]", "score.complexity=none"]


def scale(ctx: Context) -> tuple[dict, list[dict]]:
    """The benchmark: see the module docstring. Its files (~0.5 GB in full) are deleted after."""
    work = Path(tempfile.mkdtemp(prefix="reconad-scale-"))
    try:
        return _measure(ctx, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(ctx: Context, work: Path) -> tuple[dict, list[dict]]:
    from reconad.data import load_named

    n = QUICK_N if ctx.quick else FULL_N
    n_png = QUICK_PNGS if ctx.quick else FULL_PNGS
    mnist = load_named("mnist", ctx.data_dir, download=True).train_x  # uint8 (60000, 1, 28, 28)
    small = work / "images.npy"
    np.save(small, mnist[:n])
    big = work / "images-10x.npy"
    _save_repeated(big, mnist[:n], 10)
    pngs = work / "pngs"
    _save_pngs(pngs, mnist[:n_png])
    pngs_10x = work / "pngs-10x"
    _copy_pngs(pngs, pngs_10x, 10)
    data = [] if ctx.data_dir is None else [f"data.data_dir={ctx.data_dir}"]
    threads = 1 if ctx.quick else (os.cpu_count() or 1)
    os.environ[THREADS_ENV] = str(threads)  # read by every probe
    data.append(f"train.threads={threads}")
    rows = []

    def measure(what: str, probe: str, *args: str) -> dict:
        row = {"measurement": what, **_probe(probe, *args)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    run_sets = ["train.epochs=1", *(QUICK_RUN if ctx.quick else []), *data, *ctx.sets]
    run = measure("reconad run default", "cli", "run", "default", "--out",
                  str(work / "run"), "--quiet", *_sets(run_sets))
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    run["train_seconds"] = metrics["training"]["train_seconds"]
    run["seconds_outside_training"] = round(run["wall_seconds"] - run["train_seconds"], 2)
    detector = str(work / "run" / "detector.safetensors")

    def score(what: str, source: Path, count: int) -> dict:
        row = measure(what, "cli", "score", detector, str(source), "--out",
                      str(work / f"{source.stem}.csv"))
        row["images"] = count
        row["images_per_s"] = round(count / row["wall_seconds"], 1)
        return row

    command = score(f"reconad score, {n} from .npy", small, n)
    forward = measure(f"bare forward pass, {n} from .npy", "forward", detector, str(small))
    tenfold = score(f"reconad score, {10 * n} from .npy", big, 10 * n)
    folder = score(f"reconad score, {n_png} PNGs", pngs, n_png)
    folder_10x = score(f"reconad score, {10 * n_png} PNGs", pngs_10x, 10 * n_png)
    ray = {}
    for workers in (1, 2):
        ray[workers] = measure(f"reconad score --engine ray --workers {workers}, {n} from .npy",
                               "cli", "score", detector, str(small), "--engine", "ray",
                               "--workers", str(workers), "--out",
                               str(work / f"ray-{workers}.csv"))
        ray[workers]["images_per_s"] = round(n / ray[workers]["wall_seconds"], 1)
        ray[workers]["max_rel_diff_vs_score"] = _max_rel_diff(work / f"ray-{workers}.csv",
                                                              work / f"{small.stem}.csv")
    loops = {kind: measure(f"{kind} AE inside score_images, {n}", "loop", kind, str(small))
             for kind in ("dense", "conv")}
    epochs = "1" if ctx.quick else "3"
    trained = {}
    for stream in ("false", "true"):
        sets = [f"data.source={small}", f"data.stream={stream}", f"train.epochs={epochs}",
                f"train.threads={threads}", *STREAM_RUN, *ctx.sets]
        out = work / f"stream-{stream}"
        row = measure(f"training, data.stream={stream}", "cli", "run", "default", "--out",
                      str(out), "--quiet", *_sets(sets))
        m = json.loads((out / "metrics.json").read_text())
        history = (out / "history.csv").read_text().splitlines()[1:]
        row["epochs"] = len(history)
        row["seconds_per_epoch"] = round(
            float(np.mean([float(line.split(",")[-1]) for line in history])), 3)
        row["dev_auroc"] = m["dev"]["auroc"]
        trained[stream] = row

    headline = {
        "n_images": n,
        "torch_threads": threads,
        "score_images_per_s": command["images_per_s"],
        "forward_images_per_s": forward["images_per_s"],
        "score_over_forward": round(command["images_per_s"] / forward["images_per_s"], 3),
        # issue 10's target: the whole command within 2x the bare forward pass + 5 s start-up
        "score_seconds": command["wall_seconds"],
        "score_budget_seconds": round(2 * n / forward["images_per_s"] + 5, 2),
        "score_peak_rss_mib": command["peak_rss_mib"],
        "score_10x_peak_rss_mib": tenfold["peak_rss_mib"],
        "rss_ratio_10x": round(tenfold["peak_rss_mib"] / command["peak_rss_mib"], 3),
        "png_images_per_s": folder["images_per_s"],
        "png_peak_rss_mib": folder["peak_rss_mib"],
        "png_10x_peak_rss_mib": folder_10x["peak_rss_mib"],
        "png_rss_ratio_10x": round(folder_10x["peak_rss_mib"] / folder["peak_rss_mib"], 3),
        "ray_1_worker_seconds": ray[1]["wall_seconds"],
        "ray_2_workers_seconds": ray[2]["wall_seconds"],
        "ray_2_over_1_speedup": round(ray[1]["wall_seconds"] / ray[2]["wall_seconds"], 3),
        "ray_max_rel_diff_vs_score": max(r["max_rel_diff_vs_score"] for r in ray.values()),
        "run_default_peak_rss_mib": run["peak_rss_mib"],
        "run_default_seconds_outside_training": run["seconds_outside_training"],
        "dense_loop_images_per_s": loops["dense"]["images_per_s"],
        "conv_loop_images_per_s": loops["conv"]["images_per_s"],
        "train_in_memory_seconds_per_epoch": trained["false"]["seconds_per_epoch"],
        "train_streamed_seconds_per_epoch": trained["true"]["seconds_per_epoch"],
        "train_in_memory_peak_rss_mib": trained["false"]["peak_rss_mib"],
        "train_streamed_peak_rss_mib": trained["true"]["peak_rss_mib"],
        "train_in_memory_dev_auroc": trained["false"]["dev_auroc"],
        "train_streamed_dev_auroc": trained["true"]["dev_auroc"],
        "streamed_over_in_memory_epoch": round(trained["true"]["seconds_per_epoch"]
                                               / trained["false"]["seconds_per_epoch"], 3),
        "streamed_dev_auroc_difference": round(abs(trained["true"]["dev_auroc"]
                                                   - trained["false"]["dev_auroc"]), 5),
    }
    return headline, rows


def _sets(overrides: list[str]) -> list[str]:
    return [part for item in overrides for part in ("--set", item)]


def _save_repeated(path: Path, images: np.ndarray, times: int) -> None:
    """``images`` repeated ``times`` over into a ``.npy``, written a copy at a time."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=images.dtype,
                                    shape=(times * len(images), *images.shape[1:]))
    for k in range(times):
        out[k * len(images):(k + 1) * len(images)] = images
    out.flush()
    del out


def _copy_pngs(source: Path, folder: Path, times: int) -> None:
    """``times`` copies of every PNG of ``source`` in ``folder`` (a larger folder, cheaply)."""
    folder.mkdir(parents=True)
    for k in range(times):
        for path in sorted(source.iterdir()):
            shutil.copyfile(path, folder / f"{k}-{path.name}")


def _max_rel_diff(got: Path, expected: Path) -> float:
    """The largest relative difference between two score CSVs' scores, matched by id."""
    import csv

    def scores(path: Path) -> dict[str, float]:
        with path.open(newline="") as f:
            return {row["id"]: float(row["score"]) for row in csv.DictReader(f)}

    a, b = scores(got), scores(expected)
    if a.keys() != b.keys():
        raise RuntimeError(f"{got} and {expected} score different images")
    return float(max(abs(a[i] - b[i]) / max(abs(b[i]), 1e-12) for i in b))


def _save_pngs(folder: Path, images: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{i:06d}.png")


# --------------------------------------------------------------------------- measurements


def _probe(kind: str, *args: str) -> dict:
    """Run one measurement in a fresh interpreter; its wall seconds and peak RSS (MiB)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--probe", kind, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe {kind} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _run_probe(kind: str, args: list[str]) -> dict:
    """The measurement itself, inside the subprocess: its wall and CPU seconds (user +
    system, all threads: on a machine shared with other work the CPU seconds vary less) and
    its peak RSS."""
    import torch

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, os.cpu_count() or 1)))
    cpu = time.process_time()
    started = time.perf_counter()
    result: dict = {}
    if kind == "cli":
        from reconad.cli import app

        try:
            app(args, standalone_mode=False)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    elif kind == "forward":
        result = _forward(*args)
    elif kind == "loop":
        result = _loop(*args)
    else:
        raise ValueError(kind)
    wall = time.perf_counter() - started
    return {"wall_seconds": round(wall, 3), "cpu_seconds": round(time.process_time() - cpu, 3),
            "peak_rss_mib": _peak_rss_mib(), **result}


def _forward(detector_path: str, images_path: str, views: str = "1") -> dict:
    """The detector's network alone over the images: uint8 batches of 256 -> float32 ->
    ``model(x)`` (``views`` times per batch: the passes of an image and its test-time
    copies), no score, no file (timed after a warm-up of 4 batches)."""
    import torch

    from reconad.data import float_batch
    from reconad.detector import Detector

    model = Detector.load(detector_path).model_.eval()
    x = np.load(images_path, mmap_mode="r")
    with torch.no_grad():  # warm-up: oneDNN picks its kernels on the first passes
        for start in range(0, 1024, 256):
            model(torch.from_numpy(float_batch(np.asarray(x[start:start + 256]))))
    started, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for start in range(0, len(x), 256):
            batch = torch.from_numpy(float_batch(np.asarray(x[start:start + 256])))
            for _ in range(int(views)):
                model(batch)
    seconds = time.perf_counter() - started
    return {"images": len(x), "images_per_s": round(len(x) / seconds, 1),
            "forward_seconds": round(seconds, 3),
            "forward_cpu_seconds": round(time.process_time() - cpu, 3)}


def _loop(kind: str, images_path: str) -> dict:
    """A plain autoencoder (one member, no class head; dense from ``default``, conv from
    ``noise-gaussian``) scored by :func:`reconad.score.score_images` (timed after a
    warm-up on 1,024 images)."""
    import torch

    from reconad.config import load_config
    from reconad.models import build_model
    from reconad.score import score_images

    preset = {"dense": "default", "conv": "noise-gaussian"}[kind]
    cfg = load_config(preset, ["model.members=1", "model.class_head=false",
                               "score.parts=[recon]"]).model
    torch.manual_seed(0)
    model = build_model(cfg, (1, 28, 28))
    x = np.load(images_path, mmap_mode="r")
    score_images(model, x[:1024])  # warm-up, as for the bare forward pass
    started = time.perf_counter()
    score_images(model, x)
    seconds = time.perf_counter() - started
    return {"images": len(x), "images_per_s": round(len(x) / seconds, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one measurement of the scale benchmark")
    parser.add_argument("--probe", required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    print(json.dumps(_run_probe(options.probe, options.args)))

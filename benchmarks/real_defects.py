"""Defects in real photographs: the ``defects`` preset on mtd-dev (magnetic tiles).

mtd-dev (``/work/shared/data/mtd-dev``; README there) is in the MVTec AD layout: 500 normal
training tiles, a test set of 120 normal tiles, 115 with blowholes and 85 with breaks, pixel
masks; greyscale photographs of many sizes. Every method sees them at the ``defects``
preset's working size, 128x128 (masks box-resized with the images), and is scored there.

Rows, one per method and seed (``--seeds N``: seeds 0..N-1):

- ``defects``: ``reconad.pipeline.run`` of the preset with ``data.source`` and nothing else;
- ``defects-ssim``: Bergmann's recipe (the ``defects-ssim`` preset) plus ``data.resize``
  128x128, which it needs for tiles of many sizes;
- ``kNN on pixels``: the distance of each test tile to its nearest training tile (Euclidean,
  scikit-learn; image score only, no map, so no pixel metrics).

Image AUROC (all test tiles, and each defect kind against the normal ones), pixel AUROC and
AU-PRO up to FPR 0.3 (:func:`reconad.evaluation.localization_metrics`, as metrics.json has
them), ``seconds`` (the run's wall time: loading, training, scoring), ``cpu_seconds`` (its
CPU time, all threads: on a shared machine the wall time says little) and ``peak_rss_mib``
(of the process that ran it: every run is its own process). The headline holds each metric's mean
over seeds per method (``image_auroc``, ``pixel_auroc``, ``pro``: one table of methods each),
``per_kind`` and ``seconds`` / ``peak_rss_mib`` per method.

    python benchmarks/run.py real-defects [--seeds 3] [--data-dir DIR] [--quick]

The data folder is ``--data-dir`` when it holds ``train/good``, else ``$RECONAD_MTD_DEV``, else
``../shared/data/mtd-dev`` beside the repository. The rows so far are written to
``real-defects.partial.json`` after every run (``summarise`` makes the headline from them).
``--quick``: 20 training steps, for trying
the benchmark out (numbers meaningless).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import resource
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from reconad.errors import ReconadError
from reconad.files import write_json_atomic

SIZE = 128  # the defects preset's working size
METHODS = ("defects", "defects-ssim", "kNN on pixels")
QUICK = {"defects": ["train.steps=20", "train.epochs=2"],
         "defects-ssim": ["train.epochs=1", "model.channels=[8,8]"]}
EXTRA = {"defects": [], "defects-ssim": [f"data.resize=[{SIZE},{SIZE}]"]}
METRICS = ("image_auroc", "pixel_auroc", "pro")


def data_root(ctx) -> Path:
    """mtd-dev: ``--data-dir`` if it holds train/good, else $RECONAD_MTD_DEV, else the default
    beside the repository."""
    for candidate in (getattr(ctx, "data_dir", None), os.environ.get("RECONAD_MTD_DEV")):
        if candidate and (Path(candidate) / "train" / "good").is_dir():
            return Path(candidate)
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "mtd-dev"
    if not (default / "train" / "good").is_dir():
        raise ReconadError(f"mtd-dev not found at {default}; pass --data-dir DIR or set "
                           "RECONAD_MTD_DEV")
    return default


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def kind_aurocs(kinds: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Image AUROC of all test images and of each defect kind against the normal ones."""
    kinds = np.asarray(kinds).astype(str)
    labels = (kinds != "good").astype(int)
    out = {"image_auroc": float(roc_auc_score(labels, scores))}
    for kind in sorted(set(kinds.tolist()) - {"good"}):
        pick = (kinds == "good") | (kinds == kind)
        out[f"image_auroc_{kind}"] = float(roc_auc_score(labels[pick], scores[pick]))
    return out


def reconad_job(preset: str, root: str, seed: int, overrides: list[str]) -> dict:
    """One ``reconad.pipeline.run`` (in its own process): the row's numbers."""
    import torch

    from reconad.config import load_config
    from reconad.data import read_defect_dataset
    from reconad.pipeline import run

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    started, cpu_started = time.perf_counter(), time.process_time()
    config = load_config(preset, [f"data.source={root}", f"seed={seed}", *EXTRA[preset],
                                  *overrides])
    result = run(config, write=False, progress=False)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    loc = result.metrics["eval"]["localization"]
    data = read_defect_dataset(root, (SIZE, SIZE))
    test = data.subset(~data.train)
    scores = result.detector.anomaly_score(test.float_images())
    row = {"method": preset, "seed": seed, **kind_aurocs(test.kinds, scores),
           "pixel_auroc": loc["pixel_auroc"], "pro": loc["pro"],
           **{f"pixel_auroc_{k}": g["pixel_auroc"] for k, g in loc["groups"].items()},
           **{f"pro_{k}": g["pro"] for k, g in loc["groups"].items()},
           "run_image_auroc": result.metrics["eval"]["auroc"],
           "steps_or_epochs": (config.train.steps or config.train.epochs),
           "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
           "peak_rss_mib": round(_peak_rss_mib(), 1)}
    return row


def knn_job(root: str) -> dict:
    """kNN on pixels: the distance to the nearest training tile (no map)."""
    from reconad.data import read_defect_dataset

    started = time.perf_counter()
    data = read_defect_dataset(root, (SIZE, SIZE))
    train, test = data.subset(data.train), data.subset(~data.train)
    x, y = train.float_images(), test.float_images()
    distance = NearestNeighbors(n_neighbors=1).fit(x.reshape(len(x), -1)).kneighbors(
        y.reshape(len(y), -1))[0][:, 0]
    return {"method": "kNN on pixels", "seed": None, **kind_aurocs(test.kinds, distance),
            "pixel_auroc": None, "pro": None,
            "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _in_process(fn, *args) -> dict:
    """``fn(*args)`` in a fresh process, so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def summarise(rows: list[dict]) -> dict:
    """The headline: per metric a table {method: mean over seeds}; per kind the same for each
    ``image_auroc_<kind>``/``pixel_auroc_<kind>``/``pro_<kind>``; seconds and peak RSS
    (mean and max) per method. None where a method has no value (kNN's pixel metrics)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))

    def mean(method: str, key: str) -> float | None:
        values = [r[key] for r in rows if r["method"] == method and r.get(key) is not None]
        return float(np.mean(values)) if values else None

    out: dict = {key: {m: mean(m, key) for m in methods} for key in METRICS}
    kinds = sorted({k.rsplit("_", 1)[1] for r in rows for k in r
                    if k.startswith("image_auroc_")})
    out["per_kind"] = {kind: {key: {m: mean(m, f"{key}_{kind}") for m in methods}
                              for key in METRICS} for kind in kinds}
    out["seconds"] = {m: mean(m, "seconds") for m in methods}
    out["cpu_seconds"] = {m: mean(m, "cpu_seconds") for m in methods}
    out["peak_rss_mib"] = {m: max(r["peak_rss_mib"] for r in rows if r["method"] == m)
                           for m in methods}
    out["seeds_per_method"] = {m: sum(r["method"] == m for r in rows) for m in methods}
    return out


def real_defects(ctx) -> tuple[dict, list[dict]]:
    """run.py's contract: ``(headline, rows)``."""
    root = str(data_root(ctx))
    rows = [_in_process(knn_job, root)]
    for seed in ctx.seed_list:
        for preset in METHODS[:2]:
            overrides = [*(QUICK[preset] if ctx.quick else []), *ctx.sets]
            rows.append(_in_process(reconad_job, preset, root, seed, overrides))
            write_json_atomic(ctx.out / "real-defects.partial.json", {"rows": rows})
            print(f"{preset} seed {seed}: " + ", ".join(
                f"{k} {rows[-1][k]:.3f}" for k in METRICS) + f", {rows[-1]['seconds']} s",
                flush=True)
    headline = {"dataset": root, "working_size": SIZE, **summarise(rows)}
    return headline, rows

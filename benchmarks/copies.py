"""Test-time copies (``score.tta_*``): do they pay their way? Quality and cost side by side.

``quality``: the ``default`` preset's held-out 4/8 dev AUROC (normal test images + 8s) on
selection seeds. One training per seed (:class:`reconad.detector.Detector` fitted as
``reconad run`` fits it); each variant's score settings are then fitted on that same model
(its bank of training codes and its calibration on the validation images) and score the dev
set. The eval set (4s) is never scored: it has no say in a choice.

``cost``: ``reconad score`` of the images in a ``.npy`` with one fitted detector saved twice,
with its copies and with ``score.tta_shift=0``, beside the bare forward passes of its
network over the images once and once per view (the image and its copies); every
measurement a fresh process (:func:`benchmarks.scale._probe`: wall and CPU seconds, peak
RSS), alternating, ``--repeats`` times.

    python -m benchmarks.copies quality --seeds 100 101 102 --data-dir DIR --out OUT
    python -m benchmarks.copies cost --detector RUN/detector.safetensors --images X.npy --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from reconad.config import load_config
from reconad.data import load_dataset
from reconad.detector import Detector
from reconad.scenarios import make_splits
from reconad.score import Scorer
from reconad.transforms import tta_views

from .scale import THREADS_ENV, _probe

# label -> score overrides on top of the preset's own (explicit: the preset's own may change)
VARIANTS = {"copies (tta_shift 0.036)": ["score.tta_shift=0.036"],
            "no copies": ["score.tta_shift=0"]}


def quality(seeds: list[int], variants: dict[str, list[str]], data_dir: str | None,
            sets: list[str]) -> list[dict]:
    """One row per seed and variant: dev AUROC, the seconds to score the dev set."""
    rows = []
    for seed in seeds:
        base = [f"seed={seed}", *([f"data.data_dir={data_dir}"] if data_dir else []), *sets]
        cfg = load_config("default", base)
        splits = make_splits(load_dataset(cfg.data, seed), cfg.scenario, seed)
        started = time.perf_counter()
        detector = Detector(model=cfg.model, loss=cfg.loss, train=cfg.train,
                            score=load_config("default", [*base, "score.tta_shift=0"]).score,
                            quantile=cfg.threshold.quantile, seed=seed, progress=False
                            ).fit(splits.train, y=splits.train_labels, X_val=splits.val)
        train_seconds = round(time.perf_counter() - started, 1)
        dev = splits.sets["dev"]
        for label, overrides in variants.items():
            score = load_config("default", [*base, *overrides]).score
            started = time.perf_counter()
            detector.scorer_ = Scorer(score).fit(detector.model_, splits.train, splits.val, seed)
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            scores = detector.anomaly_score(dev.x)
            rows.append({"seed": seed, "variant": label, "tta_shift": score.tta_shift,
                         "views": len(tta_views(_one_image(dev.x), score.tta_shift,
                                                score.tta_rotation, score.tta_zoom)),
                         "dev_auroc": float(roc_auc_score(dev.is_anomaly, scores)),
                         "train_seconds": train_seconds,
                         "scorer_fit_seconds": round(fit_seconds, 1),
                         "dev_score_seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _one_image(x: np.ndarray) -> torch.Tensor:
    """A blank image of ``x``'s shape (to count the views a setting scores)."""
    return torch.zeros((1, *x.shape[1:]))


def cost(detector: Path, images: Path, repeats: int, work: Path, threads: int) -> list[dict]:
    """``reconad score`` with and without copies and the bare forward passes, alternating."""
    os.environ[THREADS_ENV] = str(threads)
    loaded = Detector.load(detector)
    config = loaded.scorer_.config
    views = len(tta_views(_one_image(np.load(images, mmap_mode="r")), config.tta_shift,
                          config.tta_rotation, config.tta_zoom))
    plain = work / "no-copies.safetensors"
    loaded.scorer_.config = config.model_copy(update={"tta_shift": 0.0, "tta_rotation": 0.0,
                                                      "tta_zoom": 0.0})
    loaded.save(plain)  # the same network and bank; only its calibration is not refitted
    rows = []
    for repeat in range(repeats):
        for what, kind, args in (
                (f"reconad score, {views} views", "cli",
                 ["score", str(detector), str(images), "--out", str(work / "a.csv")]),
                ("reconad score, 1 view", "cli",
                 ["score", str(plain), str(images), "--out", str(work / "b.csv")]),
                (f"bare forward x {views}", "forward", [str(detector), str(images), str(views)]),
                ("bare forward x 1", "forward", [str(detector), str(images), "1"])):
            rows.append({"measurement": what, "repeat": repeat, **_probe(kind, *args)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    q.add_argument("--data-dir")
    q.add_argument("--set", dest="sets", action="append", default=[])
    c = sub.add_parser("cost")
    c.add_argument("--detector", type=Path, required=True)
    c.add_argument("--images", type=Path, required=True)
    c.add_argument("--repeats", type=int, default=2)
    c.add_argument("--threads", type=int, default=1)
    for p in (q, c):
        p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.what == "quality":
        rows = quality(args.seeds, VARIANTS, args.data_dir, args.sets)
    else:
        rows = cost(args.detector.resolve(), args.images.resolve(), args.repeats, args.out,
                    args.threads)
    report = {"command": " ".join(["python -m benchmarks.copies", *(argv or sys.argv[1:])]),
              "wall_seconds": round(time.perf_counter() - started, 1), "rows": rows}
    path = args.out / f"copies-{args.what}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

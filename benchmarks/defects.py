"""Defect localisation on generated texture patches: reconad against a kNN-on-pixels baseline.

For each texture (``brick``, ``grass``, ``gravel``) :func:`reconad.data.synthetic_defects
.make_defect_dataset` generates 1,000 normal training patches and a test set of 500 normal and
200 defective 64x64 RGB patches (scratch, blot, missing piece, colour shift; ~1 % of the
pixels), read back with :func:`reconad.data.mvtec.read_defect_dataset`.

reconad (``reconad.pipeline.run`` on the generated MVTec folder, one run per texture and seed,
``--seeds N``): the ``defects-ssim`` preset's recipe (SSIM autoencoder on crops, smoothed
standardised SSIM + squared-error map, top-1 % score) and the same autoencoder scored by its
plain mean squared error (``score.map=none``: what reconad did before anomaly maps). Image
AUROC, pixel AUROC and PRO are those of the test images (metrics.json's ``eval`` set).
``--quick``: one epoch of a small model, for trying the benchmark out.

Baseline (no training, no PyOD): every test patch's nearest training patch in pixel space
(scikit-learn ``NearestNeighbors``, Euclidean). Image score: the distance, or a reduction of
the anomaly map ``|x - nearest|`` (mean over channels; raw or Gaussian-smoothed, sigma 2):
``mean`` (what reconad's mean error does), ``max``, ``topk`` 1 %. Pixel metrics
(:mod:`reconad.localization`): pixel AUROC and AU-PRO (FPR <= 0.3) of the map named in each
row's ``map`` column (the raw map for the distance row).

    python benchmarks/run.py defects [--quick] [--seeds N]   # DIR/defects.json, .csv, .md
    python benchmarks/defects.py [--quick] [--out DIR]       # the kNN rows alone

``defects(ctx)`` follows run.py's contract (``ctx.out``, ``ctx.quick``): it returns
``(headline, rows)``; the headline holds the mean over textures of each row kind.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from reconad.data.mvtec import DefectDataset, read_defect_dataset
from reconad.data.synthetic_defects import make_defect_dataset
from reconad.files import write_json_atomic
from reconad.localization import pixel_auroc, pro_score
from reconad.maps import gaussian_smooth, reduce_map

TEXTURES = ("brick", "grass", "gravel")
FULL = {"n_train": 1000, "n_test_good": 500, "n_test_defect": 200}
QUICK = {"n_train": 200, "n_test_good": 60, "n_test_defect": 40}
SMOOTH_SIGMA = 2.0
TOPK = 0.01
# (row name, smoothing sigma of the map or None for the distance itself, reduction)
SCORES = [("nn distance", None, None), ("mean |x - nn|", 0.0, "mean"),
          ("max |x - nn| (smoothed)", SMOOTH_SIGMA, "max"),
          ("top 1% |x - nn| (smoothed)", SMOOTH_SIGMA, "topk")]


def knn_on_pixels(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest training image and the map ``|x - nearest|``.

    Args:
        train: float32 ``(N, C, H, W)`` in [0, 1], normal images.
        test: float32 ``(M, C, H, W)``.

    Returns:
        Distances ``(M,)`` and maps ``(M, H, W)`` (channel mean of the absolute difference).
    """
    nn = NearestNeighbors(n_neighbors=1).fit(train.reshape(len(train), -1))
    distance, index = nn.kneighbors(test.reshape(len(test), -1))
    maps = np.abs(test - train[index[:, 0]]).mean(axis=1)  # (M, H, W)
    return distance[:, 0], maps.astype(np.float32)


def evaluate_texture(data: DefectDataset, texture: str) -> list[dict]:
    """One row per image score of :data:`SCORES` for one generated dataset."""
    train, test = data.subset(data.train), data.subset(~data.train)
    distance, raw = knn_on_pixels(train.float_images(), test.float_images())
    maps = {0.0: raw, SMOOTH_SIGMA: gaussian_smooth(torch.from_numpy(raw), SMOOTH_SIGMA).numpy()}
    pixel = {s: (pixel_auroc(m, test.masks), pro_score(m, test.masks)) for s, m in maps.items()}
    rows = []
    for name, sigma, reduction in SCORES:
        if sigma is None:
            scores, (pix, pro) = distance, pixel[0.0]
        else:
            scores = reduce_map(torch.from_numpy(maps[sigma]), reduction, TOPK).numpy()
            pix, pro = pixel[sigma]
        row = {"texture": texture, "method": "kNN on pixels", "image_score": name,
               "map": f"|x - nn| smoothed (sigma {sigma:g})" if sigma else "|x - nn|",
               "image_auroc": float(roc_auc_score(test.labels, scores)),
               "pixel_auroc": pix, "pro": pro}
        good = test.kinds == "good"
        for kind in sorted(set(test.kinds) - {"good"}):
            pick = good | (test.kinds == kind)
            row[f"auroc_{kind}"] = float(roc_auc_score(test.labels[pick], scores[pick]))
        rows.append(row)
    return rows


# (row name, overrides of the defects-ssim preset)
RECONAD = [("top 1% SSIM + squared map, standardised (defects-ssim)", []),
           ("mean squared error (defects-ssim model)",
            ["score.map=none", "score.kind=mse", "score.reduction=mean", "score.smooth_sigma=0",
             "score.standardize=false"])]
RECONAD_QUICK = ["train.epochs=1", "model.channels=[8,8]"]


def reconad_rows(root: Path, texture: str, data: DefectDataset, ctx) -> list[dict]:
    """One row per :data:`RECONAD` score and seed: ``reconad run`` on the generated folder."""
    from reconad.config import load_config
    from reconad.pipeline import run

    test = data.subset(~data.train)
    rows = []
    for name, overrides in RECONAD:
        for seed in range(getattr(ctx, "seeds", 1)):
            config = load_config("defects-ssim", [
                f"data.source={root}", f"seed={seed}", f"name=defects-{texture}",
                *(RECONAD_QUICK if ctx.quick else []), *overrides,
                *getattr(ctx, "sets", [])])
            result = run(config, write=False, progress=False)
            loc = result.metrics["eval"]["localization"]
            scores = result.detector.anomaly_score(test.float_images())
            row = {"texture": texture, "method": "reconad", "image_score": name,
                   "map": config.score.map if config.score.map != "none" else
                   f"{config.score.kind} error", "seed": seed,
                   "image_auroc": float(roc_auc_score(test.labels, scores)),
                   "pixel_auroc": loc["pixel_auroc"], "pro": loc["pro"]}
            good = test.kinds == "good"
            for kind in sorted(set(test.kinds) - {"good"}):
                pick = good | (test.kinds == kind)
                row[f"auroc_{kind}"] = float(roc_auc_score(test.labels[pick], scores[pick]))
            rows.append(row)
    return rows


def defects(ctx) -> tuple[dict, list[dict]]:
    """run.py's benchmark contract: ``(headline, rows)``; data generated in a temporary folder.

    The headline holds, per row name, the mean over textures (and seeds) of each metric."""
    counts = QUICK if ctx.quick else FULL
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="reconad-defects-") as tmp:
        for texture in TEXTURES:
            root = make_defect_dataset(Path(tmp) / texture, texture, size=64, seed=0, **counts)
            data = read_defect_dataset(root)
            rows += evaluate_texture(data, texture)
            if not getattr(ctx, "knn_only", False):
                rows += reconad_rows(root, texture, data, ctx)
    headline: dict = {"dataset": {**counts, "size": 64, "seed": 0, "textures": list(TEXTURES)}}
    names = list(dict.fromkeys(r["image_score"] for r in rows))
    for key in ("image_auroc", "pixel_auroc", "pro"):
        headline[key] = {name: _mean([r[key] for r in rows if r["image_score"] == name])
                         for name in names}
    return headline, rows


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small datasets, temporary output")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="reconad-bench-defects-")) if args.quick
                       else Path(__file__).resolve().parent / "results")
    started = time.perf_counter()
    headline, rows = defects(SimpleNamespace(out=out, quick=args.quick, knn_only=True))
    report = {**headline, "wall_seconds": round(time.perf_counter() - started, 1),
              "quick": args.quick, "rows": rows}
    write_json_atomic(out / "defects.json", report)
    print(f"wrote {out / 'defects.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

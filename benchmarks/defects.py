"""Defect localisation on generated texture patches: reconad against a kNN-on-pixels baseline.

Family 1, the numbers settings were chosen on: for each texture (``brick``, ``grass``,
``gravel``) :func:`reconad.data.make_defect_dataset` generates 1,000 normal training patches
and a test set of 500 normal and 200 defective 64x64 RGB patches (scratch, blot, missing
piece, colour shift; ~1 % of the pixels), read back with :func:`reconad.data
.read_defect_dataset`.

Family 2, for testing only (never used to choose a setting, a preset or a recipe): the same
counts of one-channel grey patches of procedural textures (``wood``, ``metal``, ``grain``)
with per-patch lighting that varies more than the subtle defects change (stain, cut, texture
swap, dent; :func:`reconad.data.make_grey_defect_dataset`). Its rows carry ``family: 2`` and
its means stay apart in the headline (``family2``), never mixed into family 1's.

reconad (``reconad.pipeline.run`` on the generated MVTec folder, one run per texture and seed,
``--seeds N``): the ``defects-ssim`` preset's recipe (denoising SSIM autoencoder on flipped
32x32 crops; score = top 1 % of the mean of the standardised, smoothed SSIM and squared-error
maps and the local colour-statistics map, :mod:`reconad.score`) and the same model's
plain mean squared error (its map: the per-pixel squared error; what reconad scored before
anomaly maps). Image AUROC, pixel AUROC, PRO and the image AUROC of each defect kind are
those of the test images; ``seconds`` is the run's wall time (training and scoring).
``--quick``: one epoch of a small model on smaller datasets, for trying the benchmark out.

Baseline (no training, no PyOD): every test patch's nearest training patch in pixel space
(scikit-learn ``NearestNeighbors``, Euclidean). Image score: the distance, or a reduction of
the anomaly map ``|x - nearest|`` (mean over channels; raw or Gaussian-smoothed, sigma 2):
``mean`` (what reconad's mean error does), ``max``, ``topk`` 1 %. Pixel metrics
(:mod:`reconad.evaluation`): pixel AUROC and AU-PRO (FPR <= 0.3) of the map named in each
row's ``map`` column (the raw map for the distance row).

    python benchmarks/run.py defects [--quick] [--seeds N]   # DIR/defects.json, .csv, .md
    python benchmarks/defects.py [--quick] [--out DIR]       # the kNN rows alone

``defects(ctx)`` follows run.py's contract (``ctx.out``, ``ctx.quick``, ``ctx.seed_list``,
``ctx.sets``): it returns ``(headline, rows)``; the headline holds, per row kind, the mean over
family 1's textures (of the per-texture means over seeds), the same over family 2's textures
(``family2``) and the per-texture means of both (``per_texture``).
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

from reconad.data import (
    GREY_TEXTURES,
    DefectDataset,
    make_defect_dataset,
    make_grey_defect_dataset,
    read_defect_dataset,
)
from reconad.evaluation import pixel_auroc, pro_score
from reconad.files import write_json_atomic
from reconad.score import gaussian_smooth, reduce_map

TEXTURES = ("brick", "grass", "gravel")  # family 1: what settings were chosen on
FAMILY2_TEXTURES = GREY_TEXTURES  # family 2: testing only, never for choosing
# family -> (its textures, its generator)
FAMILIES = {1: (TEXTURES, make_defect_dataset), 2: (FAMILY2_TEXTURES, make_grey_defect_dataset)}
METRICS = ("image_auroc", "pixel_auroc", "pro")
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
               "pixel_auroc": pix, "pro": pro, **_kind_aurocs(test, scores)}
        rows.append(row)
    return rows


RECIPE_ROW = "top 1% SSIM + squared + colour-statistics map (defects-ssim)"  # summarize.py
MEAN_ERROR_ROW = "mean squared error (defects-ssim model)"
RECONAD_QUICK = ["train.epochs=1", "model.channels=[8,8]"]


def _kind_aurocs(test: DefectDataset, scores: np.ndarray) -> dict[str, float]:
    """Image AUROC of each defect kind against all the normal test images."""
    good = test.kinds == "good"
    out = {}
    for kind in sorted(set(test.kinds) - {"good"}):
        pick = good | (test.kinds == kind)
        out[f"auroc_{kind}"] = float(roc_auc_score(test.labels[pick], scores[pick]))
    return out


def reconad_rows(root: Path, texture: str, data: DefectDataset, ctx) -> list[dict]:
    """Two rows per seed from one ``reconad run`` of the ``defects-ssim`` preset on the
    generated folder: its own score (:data:`RECIPE_ROW`) and the same model's plain mean
    squared error (:data:`MEAN_ERROR_ROW`, what reconad scored before anomaly maps; its map
    is the per-pixel squared error)."""
    from reconad.config import load_config
    from reconad.pipeline import run

    test = data.subset(~data.train)
    x = test.float_images()
    rows = []
    for seed in getattr(ctx, "seed_list", [0]):
        started = time.perf_counter()
        config = load_config("defects-ssim", [
            f"data.source={root}", f"seed={seed}", f"name=defects-{texture}",
            *(RECONAD_QUICK if ctx.quick else []), *getattr(ctx, "sets", [])])
        result = run(config, write=False, progress=False)
        seconds = round(time.perf_counter() - started, 1)
        detector = result.detector
        recipe_scores = detector.anomaly_score(x)
        recipe_maps = detector.anomaly_maps(x)
        error_maps = detector.error_maps(x)  # (N, H, W) per-pixel squared error
        for name, map_name, scores, maps in (
                (RECIPE_ROW, config.score.map, recipe_scores, recipe_maps),
                (MEAN_ERROR_ROW, "squared error", error_maps.reshape(len(x), -1).mean(1),
                 error_maps)):
            rows.append({"texture": texture, "method": "reconad", "image_score": name,
                         "map": map_name, "seed": seed,
                         "image_auroc": float(roc_auc_score(test.labels, scores)),
                         "pixel_auroc": pixel_auroc(maps, test.masks),
                         "pro": pro_score(maps, test.masks),
                         **_kind_aurocs(test, np.asarray(scores)), "seconds": seconds})
    return rows


def defects(ctx) -> tuple[dict, list[dict]]:
    """run.py's benchmark contract: ``(headline, rows)``; data generated in a temporary folder.

    The headline holds, per row name (image score), the mean over family 1's textures of the
    per-texture means over seeds of each metric (``image_auroc``, ``pixel_auroc``, ``pro``:
    the numbers settings were chosen on), the same means over family 2's textures apart
    (``family2``: testing only) and the per-texture means of both (``per_texture``)."""
    counts = QUICK if ctx.quick else FULL
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="reconad-defects-") as tmp:
        for family, (textures, generate) in FAMILIES.items():
            for texture in textures:
                root = generate(Path(tmp) / texture, texture, size=64, seed=0, **counts)
                data = read_defect_dataset(root)
                started = time.perf_counter()
                found = evaluate_texture(data, texture)
                seconds = round(time.perf_counter() - started, 1)
                found = [{**row, "seed": None, "seconds": seconds} for row in found]
                if not getattr(ctx, "knn_only", False):
                    found += reconad_rows(root, texture, data, ctx)
                rows += [{"family": family, **row} for row in found]
    first = summary([r for r in rows if r["family"] == 1], TEXTURES)
    second = summary([r for r in rows if r["family"] == 2], FAMILY2_TEXTURES)
    names = list(dict.fromkeys(r["image_score"] for r in rows))
    headline: dict = {
        "dataset": {**counts, "size": 64, "seed": 0, "textures": list(TEXTURES),
                    "family2_textures": list(FAMILY2_TEXTURES)},
        **{key: first[key] for key in METRICS},
        "family2": {"use": "testing only: never used to choose settings",
                    "textures": list(FAMILY2_TEXTURES), **{key: second[key] for key in METRICS}},
        "per_texture": {name: {**first["per_texture"].get(name, {}),
                               **second["per_texture"].get(name, {})} for name in names}}
    return headline, rows


def summary(rows: list[dict], textures: tuple[str, ...] = TEXTURES) -> dict:
    """Per row name (``image_score``): ``per_texture`` = each texture's means over its rows
    (seeds) of image AUROC, pixel AUROC, PRO and seconds; ``image_auroc``, ``pixel_auroc``,
    ``pro`` = the mean over textures of those per-texture means (each texture counts once,
    whatever its number of seeds; a missing value is left out, None when none is known)."""
    names = list(dict.fromkeys(r["image_score"] for r in rows))
    per_texture = {name: {t: {key: _mean([r[key] for r in rows
                                          if r["image_score"] == name and r["texture"] == t])
                              for key in (*METRICS, "seconds")}
                          for t in textures}
                   for name in names}
    out: dict = {key: {name: _mean([per_texture[name][t][key] for t in textures])
                       for name in names} for key in METRICS}
    out["per_texture"] = per_texture
    return out


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

"""Training and scoring speed of the dense and conv models against this machine's matmul peak.

- peak: best of several large fp32 ``torch.matmul`` (2 n^3 FLOP each), same threads as training.
- training: ``Detector.fit`` for a few epochs on random 28x28 images at batch 64/256/1024
  (128x128 RGB at batch 32/64/128 for ``conv-rgb``; optimizer, shuffling and batching
  included); samples/s from the median epoch time (the first
  epoch is dropped when there are several).
- effective FLOP/s: matmul/conv FLOP of one forward + backward pass per image, counted by
  ``torch.utils.flop_counter.FlopCounterMode``, times samples/s; as a fraction of the peak.
- scoring: ``Detector.anomaly_score`` images/s. Memory: the process's peak RSS (getrusage).

The models are the presets' autoencoders (dense: ``default``, conv: ``noise-gaussian``,
conv-rgb: ``conv-rgb`` on 3x128x128 images), one
member, without a class head or augmentation, scored by reconstruction error; pixels do not
change the speed, so no dataset is needed.
"""

from __future__ import annotations

import resource
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from reconad.detector import Detector
from reconad.models import build_model
from reconad.train import set_threads

from .common import Context, bar_plot

MODELS = {"dense": "default", "conv": "noise-gaussian", "conv-rgb": "conv-rgb"}
SHAPES = {"dense": (1, 28, 28), "conv": (1, 28, 28), "conv-rgb": (3, 128, 128)}
BATCHES = {"dense": (64, 256, 1024), "conv": (64, 256, 1024), "conv-rgb": (32, 64, 128)}
IMAGES = {"dense": 20000, "conv": 20000, "conv-rgb": 1024}  # per epoch (quick: 1024, 256)


def matmul_peak(n: int, repeats: int) -> float:
    """Best fp32 FLOP/s of an n x n @ n x n product over ``repeats`` timed runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def train_flop_per_image(model: torch.nn.Module, batch: int, shape: tuple[int, ...]) -> float:
    """Counted FLOP of one forward + backward pass of an MSE training step, per image."""
    x = torch.rand(batch, *shape)
    with FlopCounterMode(display=False) as counter:
        ((model(x) - x) ** 2).mean().backward()
    return counter.get_total_flops() / batch


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def speed(ctx: Context) -> tuple[dict, list[dict]]:
    epochs = 2 if ctx.quick else 4
    set_threads(ctx.config("default").train.threads)  # as training does (None: all cores)
    peak = matmul_peak(1024 if ctx.quick else 4096, 3 if ctx.quick else 10)
    rows = []
    for kind, preset in MODELS.items():
        shape = SHAPES[kind]
        n_images = min(IMAGES[kind], 1024 if ctx.quick else IMAGES[kind])
        if ctx.quick and kind == "conv-rgb":
            n_images = 256
        x = np.random.default_rng(0).random((n_images, *shape), dtype=np.float32)
        cfg = ctx.config(preset)
        # one autoencoder (not the preset's ensemble); random images carry no labels
        model_cfg = cfg.model.model_copy(update={"class_head": False, "members": 1})
        flop = train_flop_per_image(build_model(model_cfg, shape), BATCHES[kind][0], shape)
        for batch in BATCHES[kind]:
            train = cfg.train.model_copy(update={
                "batch_size": batch, "epochs": epochs, "patience": None, "schedule": "none",
                "augment_rotation": 0.0, "augment_shift": 0.0, "augment_zoom": 0.0})
            det = Detector(model=model_cfg, loss=cfg.loss, train=train, score=cfg.score.kind)
            # a tiny validation set: the epoch time is training
            det.fit(x, X_val=x[:min(256, len(x) // 4)])
            seconds = [r["seconds"] for r in det.history_.rows]
            per_epoch = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
            rate = n_images / per_epoch
            start = time.perf_counter()
            det.anomaly_score(x)
            scoring = n_images / (time.perf_counter() - start)
            rows.append({
                "model": kind, "preset": preset, "batch": batch,
                "train_samples_per_s": rate, "train_gflop_per_s": rate * flop / 1e9,
                "fraction_of_peak": rate * flop / peak, "flop_per_image": flop,
                "score_images_per_s": scoring, "peak_rss_mib": peak_rss_mib(),
            })
    bar_plot(ctx.out / f"{ctx.stem}.png", [f"{k} b{b}" for k in MODELS for b in BATCHES[k]],
             {"fraction of fp32 matmul peak": [r["fraction_of_peak"] for r in rows]},
             "effective FLOP/s / peak", f"training speed (peak {peak / 1e9:.0f} GFLOP/s)")
    headline: dict = {"matmul_peak_gflop_per_s": peak / 1e9}
    for r in rows:
        tag = f"{r['model']}_b{r['batch']}"
        headline[f"{tag}_train_samples_per_s"] = r["train_samples_per_s"]
        headline[f"{tag}_fraction_of_peak"] = r["fraction_of_peak"]
    for kind in MODELS:
        headline[f"{kind}_best_fraction_of_peak"] = max(
            r["fraction_of_peak"] for r in rows if r["model"] == kind)
        headline[f"{kind}_score_images_per_s"] = max(
            r["score_images_per_s"] for r in rows if r["model"] == kind)
    headline["peak_rss_mib"] = peak_rss_mib()
    return headline, rows

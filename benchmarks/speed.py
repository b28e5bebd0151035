"""Training and scoring speed of the dense and conv models against this machine's matmul peak.

- peak: best of several large fp32 ``torch.matmul`` (2 n^3 FLOP each), same threads as training.
- training: ``Detector.fit`` for a few epochs on random 28x28 images at batch 64/256/1024
  (128x128 RGB at batch 32/64/128 for ``conv-rgb``; optimizer, shuffling and batching
  included); samples/s from the median epoch time (the first
  epoch is dropped when there are several).
- effective FLOP/s: matmul/conv FLOP of one forward + backward pass per image, counted by
  ``torch.utils.flop_counter.FlopCounterMode``, times samples/s; as a fraction of the peak.
- scoring: ``Detector.anomaly_score`` images/s. Memory: the process's peak RSS (getrusage).
- ONNX against torch (issue 21): the whole detector of a shipped preset (``default``: ensemble,
  class energy, latent kNN, calibration; ``defects-ssim``: a map detector), trained briefly on
  random images, scored by ``Detector.anomaly_score`` and by its exported graph in
  onnxruntime (``reconad.engines.score_onnx``), the same images, the same threads, side by
  side in this process (best of 3 passes each); the scores' largest relative difference, and
  the extra memory each pass allocates (peak RSS growth is process-wide, so the traced numpy /
  onnxruntime memory is not separated: the row gives the RSS after each).

The models are the presets' autoencoders (dense: ``default``, conv: ``noise-gaussian``,
conv-rgb: ``conv-rgb`` on 3x128x128 images), one
member, without a class head or augmentation, scored by reconstruction error; pixels do not
change the speed, so no dataset is needed.
"""

from __future__ import annotations

import functools
import resource
import statistics
import tempfile
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from reconad.config import load_config
from reconad.detector import Detector, onnx_session
from reconad.engines import score_onnx
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
    for row in onnx_rows(ctx):
        rows.append(row)
        headline[f"{row['preset']}_onnx_over_torch"] = row["onnx_over_torch"]
        headline[f"{row['preset']}_onnx_max_rel_diff"] = row["max_rel_diff"]
    return headline, rows


ONNX_PRESETS = {"default": ((1, 28, 28), 10000), "defects-ssim": ((3, 64, 64), 500)}


def _best_rate(fn, x: np.ndarray, repeats: int = 3) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        best = min(best, time.perf_counter() - start)
    return len(x) / best, np.asarray(out, dtype=np.float64)


def onnx_rows(ctx: Context) -> list[dict]:
    """Each preset's detector scored by torch and by onnxruntime, side by side (rows with
    ``model: onnx``; needs the ``onnx`` extra)."""
    threads = torch.get_num_threads()
    rows = []
    for preset, (shape, n) in ONNX_PRESETS.items():
        n = min(n, 1000) if ctx.quick else n
        cfg = load_config(preset, ["train.epochs=1", *ctx.sets])
        rng = np.random.default_rng(0)
        x = rng.random((n, *shape), dtype=np.float32)
        y = rng.integers(0, 3, n) if cfg.model.class_head else None
        det = Detector(model=cfg.model.model_dump(), loss=cfg.loss.model_dump(),
                       train=cfg.train.model_dump(), score=cfg.score.model_dump(), seed=0,
                       device="cpu")
        torch.manual_seed(0)
        det.fit(x[: min(n, 2000)], None if y is None else y[: min(n, 2000)])
        torch_rate, want = _best_rate(det.anomaly_score, x)
        torch_rss = peak_rss_mib()
        with tempfile.TemporaryDirectory() as tmp:
            path = det.to_onnx(f"{tmp}/{preset}.onnx")
            session = onnx_session(path, threads=threads)
            onnx_rate, got = _best_rate(functools.partial(score_onnx, session), x)
        rows.append({
            "model": "onnx", "preset": preset, "images": n, "image_shape": list(shape),
            "threads": threads, "torch_images_per_s": torch_rate, "onnx_images_per_s": onnx_rate,
            "onnx_over_torch": onnx_rate / torch_rate,
            "max_rel_diff": float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0))),
            "peak_rss_mib_after_torch": torch_rss, "peak_rss_mib": peak_rss_mib(),
        })
    return rows

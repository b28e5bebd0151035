"""Training a segmenting detector (``model.kind=draem``): simulated anomalies pasted on normal
images, the autoencoder restoring them, the head finding them.

Each step draws ``batch_size`` training images, mirrors each left-right and upside down with
probability 1/2 (``train.augment_flip``), pastes a simulated anomaly
(:func:`reconad.transforms.simulate_anomalies`) on half of them at full size, then cuts one
random ``train.crop`` window of each (image, clean image and mask alike; the whole image
without a crop). The loss is the sigmoid focal
loss (gamma 2) of the head's logits against the mask plus, with ``model.reconstruct``, the
squared error and 1 - SSIM of the reconstruction against the clean image (both in the
standardised units the networks see). Adam with a cosine schedule to 0 over ``train.steps``
steps, a fixed number: the same seed gives the same model on any machine, however busy.

The steps are split into ``train.epochs`` rounds: one history row and one checkpoint each.
Every round draws from its own generator seeded by (seed, round), so training resumed from a
checkpoint ends exactly as an uninterrupted run. There is no early stopping: the simulated
anomalies change every step, and the validation images hold no real ones.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from reconad.config import LossConfig, TrainConfig
from reconad.data import float_batch
from reconad.device import grad_scaler, resolve_device, to_device
from reconad.errors import ReconadError
from reconad.losses import ssim
from reconad.train._checkpoint import Checkpoint
from reconad.train._loop import History, make_optimizer, set_threads
from reconad.train._progress import ProgressBar
from reconad.transforms import simulate_anomalies

ANOMALY_PROBABILITY = 0.5  # share of training images given an anomaly (DRAEM's)
FOCAL_GAMMA = 2.0
SSIM_RANGE = 10.0  # SSIM's data range in standardised units (about +-5 standard deviations)


def focal_loss(logits: torch.Tensor, target: torch.Tensor,
               gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Mean sigmoid focal loss of logits against a 0/1 target of the same shape."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    return ((1 - pt) ** gamma * ce).mean()


def total_steps(train_cfg: TrainConfig, n_images: int) -> int:
    """``train.steps``, else ``train.epochs`` passes of ``batch_size`` over the images."""
    return train_cfg.steps or train_cfg.epochs * math.ceil(n_images / train_cfg.batch_size)


def _batch(images: np.ndarray, train_cfg: TrainConfig, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs with anomalies, clean images, masks (B, 1, h, w)) of one step."""
    size, crop = train_cfg.batch_size, train_cfg.crop
    clean = images[rng.integers(0, len(images), size)]  # (B, C, H, W) float32
    flips = (rng.random((size, 2)) < 0.5) & train_cfg.augment_flip
    clean = np.stack([x[:, :, ::-1] if fx else x for x, fx in zip(clean, flips[:, 0], strict=True)])
    clean = np.ascontiguousarray(
        np.stack([x[:, ::-1] if fy else x for x, fy in zip(clean, flips[:, 1], strict=True)]))
    inputs, masks = simulate_anomalies(clean, images, rng, ANOMALY_PROBABILITY)
    _, _, h, w = clean.shape
    if crop is not None and (crop < h or crop < w):
        ys = rng.integers(0, h - crop + 1, size)
        xs = rng.integers(0, w - crop + 1, size)
        cut = [np.s_[..., y:y + crop, x:x + crop] for y, x in zip(ys, xs, strict=True)]
        clean = np.stack([c[s] for c, s in zip(clean, cut, strict=True)])
        inputs = np.stack([c[s] for c, s in zip(inputs, cut, strict=True)])
        masks = np.stack([m[s] for m, s in zip(masks, cut, strict=True)])
    return (torch.from_numpy(inputs), torch.from_numpy(np.ascontiguousarray(clean)),
            torch.from_numpy(np.ascontiguousarray(masks))[:, None])


def _step_loss(model: nn.Module, inputs: torch.Tensor, clean: torch.Tensor,
               masks: torch.Tensor, loss_cfg: LossConfig) -> torch.Tensor:
    out = model.training_outputs(inputs)
    loss = focal_loss(out.logits, masks)
    if out.reconstruction is not None:
        target = (clean - out.mean) / out.std
        loss = loss + F.mse_loss(out.reconstruction, target) + 1 - ssim(
            out.reconstruction, target, loss_cfg.ssim_window, loss_cfg.ssim_sigma,
            SSIM_RANGE).mean()
    return loss


def fit_segmenting(
    model: nn.Module,
    train_x: np.ndarray,
    val_x: np.ndarray | None,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    seed: int,
    progress: bool = True,
    train_y: np.ndarray | None = None,
    checkpoint: str | Path | None = None,
) -> History:
    """Train a :class:`reconad.models.SegmentingAutoencoder` in place on normal images
    ``train_x`` (N, C, H, W) (see the module's text); the arguments are
    :func:`reconad.train.fit_model`'s (``val_x`` and ``train_y`` are not used). Ctrl-C stops
    training and keeps the model as it is (``History.interrupted``)."""
    if len(train_x) == 0:
        raise ReconadError("there are no training images to paste anomalies on")
    unused = {"train.trim": train_cfg.trim, "train.denoise": train_cfg.denoise != "none",
              "train.l1_latent": train_cfg.l1_latent,
              "train.augment_rotation": train_cfg.augment_rotation,
              "train.augment_zoom": train_cfg.augment_zoom,
              "train.augment_shift": train_cfg.augment_shift}
    if given := [key for key, value in unused.items() if value]:
        raise ReconadError(f"{', '.join(given)} do not apply to model.kind=draem (it trains on "
                           "simulated anomalies); leave them at their defaults")
    set_threads(train_cfg.threads)
    device = resolve_device(train_cfg.device)
    model.to(device)
    torch.manual_seed(seed)
    images = np.concatenate([float_batch(np.asarray(train_x[i:i + 256]))
                             for i in range(0, len(train_x), 256)])  # (N, C, H, W) float32
    steps = total_steps(train_cfg, len(images))
    rounds = min(train_cfg.epochs, steps)
    optimizer = make_optimizer(model, train_cfg)
    scaler, generator = grad_scaler(device, None), torch.Generator().manual_seed(seed)
    history, first, seconds_before = History(), 1, 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = Checkpoint.load(checkpoint)
        state.restore(model, optimizer, None, generator, scaler)
        history.rows, history.resumed_after = state.history, state.epoch
        first, seconds_before = state.epoch + 1, state.seconds
    started = time.perf_counter()
    bar = ProgressBar(progress, rounds)
    try:
        with bar:
            for round_ in range(first, rounds + 1):
                round_start = time.perf_counter()
                rng = np.random.default_rng([seed, round_])
                begin, end = (round_ - 1) * steps // rounds, round_ * steps // rounds
                bar.start_epoch(round_, (end - begin) * train_cfg.batch_size)
                model.train()
                total = 0.0
                for step in range(begin, end):
                    lr = train_cfg.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    inputs, clean, masks = (to_device(t, device) for t in _batch(
                        images, train_cfg, rng))
                    loss = _step_loss(model, inputs, clean, masks, loss_cfg)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach())
                    bar.advance(train_cfg.batch_size, total / (step - begin + 1))
                train_loss = total / max(end - begin, 1)
                if not math.isfinite(train_loss):
                    raise ReconadError("training diverged (the loss became NaN or infinite); "
                                       "lower train.lr")
                history.rows.append({"epoch": round_, "train_loss": train_loss,
                                     "val_loss": None, "lr": lr,
                                     "seconds": round(time.perf_counter() - round_start, 4)})
                bar.end_epoch(train_loss, None)
                if checkpoint is not None:
                    Checkpoint.capture(
                        round_, model, optimizer, None, generator, scaler,
                        best_model=copy.deepcopy(model.state_dict()), best=train_loss,
                        bad_epochs=0, history=history.rows, best_epoch=round_,
                        best_val_loss=None, stopped=False,
                        seconds=seconds_before + time.perf_counter() - started).save(checkpoint)
    except KeyboardInterrupt:
        history.interrupted = True
    history.best_epoch = len(history.rows)
    model.eval()
    history.seconds = seconds_before + time.perf_counter() - started
    return history

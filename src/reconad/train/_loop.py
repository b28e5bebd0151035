"""The training loop: in-memory or streamed batches, early stopping on the normal validation loss.

>>> from reconad.models import build_model
>>> from reconad.config import ModelConfig
>>> x = np.random.default_rng(0).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)  # (N, C, H, W)
>>> model = build_model(ModelConfig(kind="dense", hidden=[16], latent=4), (1, 8, 8))
>>> history = fit_model(model, x[:48], x[48:], LossConfig(),
...                     TrainConfig(epochs=2, batch_size=16), seed=0, progress=False)
>>> len(history.rows), history.best_epoch in (1, 2)
(2, True)
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from reconad.config import LossConfig, TrainConfig
from reconad.device import (
    amp_dtype,
    autocast,
    grad_scaler,
    model_device,
    pass_size,
    resolve_device,
    to_device,
)
from reconad.errors import ReconadError
from reconad.losses import loss_from_config, robust_batch_loss
from reconad.train._checkpoint import Checkpoint
from reconad.train._images import TrainingImages
from reconad.train._progress import ProgressBar
from reconad.transforms import augment_batch, corrupt, random_crops, random_flips

EVAL_BATCH = 2048  # images per forward pass when only evaluating (no activations kept)
EVAL_VALUES = 2**24  # ... and at most this many input values (C*H*W each) per pass


@dataclass
class History:
    """What happened during training; ``rows`` become history.csv."""

    rows: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float | None = None
    stopped_early: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    resumed_after: int = 0  # the checkpoint's last finished epoch when resumed (else 0)

    def summary(self) -> dict:
        """The ``training`` block of metrics.json."""
        return {
            "epochs_run": len(self.rows),
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped_early": self.stopped_early,
            "interrupted": self.interrupted,
            "train_seconds": round(self.seconds, 3),
        }


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch (all cores when None)."""
    torch.set_num_threads(threads or os.cpu_count() or 1)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named in the config, in torch's fused implementation where it has one
    (Adam, AdamW, SGD: one pass over the weights per step instead of a dozen), else the
    foreach one."""
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.RMSprop(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Cosine decay over all epochs, plateau reduction on the validation loss, or None."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "plateau":
        patience = max(1, (cfg.patience or 6) // 2)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=patience)
    return None


@torch.no_grad()
def image_losses(model: nn.Module, x: torch.Tensor, loss_fn) -> torch.Tensor:
    """Per-image loss of ``model`` on ``x`` (B, C, H, W), in eval mode: (B,) on the CPU.

    ``x`` stays on the CPU; each pass is sent to the model's device."""
    model.eval()
    device = model_device(model)
    step = pass_size(tuple(x[0:1].shape[1:]), EVAL_BATCH, EVAL_VALUES) if len(x) else 1
    parts = []
    for start in range(0, len(x), step):
        batch = to_device(x[start : start + step], device)
        parts.append(loss_fn(model(batch), batch).float().cpu())
    return torch.cat(parts) if parts else torch.empty(0)


def mean_loss(model: nn.Module, x: torch.Tensor, loss_fn) -> float:
    """Mean per-image loss of ``model`` on ``x`` (B, C, H, W), in eval mode."""
    return float(image_losses(model, x, loss_fn).sum()) / max(len(x), 1)


def trimmed(model: nn.Module, x: torch.Tensor, loss_fn, fraction: float) -> torch.Tensor:
    """Indices (ascending) of ``x`` without the ``fraction`` of images of highest loss."""
    keep = len(x) - int(round(fraction * len(x)))
    return image_losses(model, x, loss_fn).argsort()[:keep].sort().values


def _reconstruction_loss(model: nn.Module, code: torch.Tensor, target: torch.Tensor,
                         loss_fn) -> torch.Tensor:
    """Per-image training loss (B,). An ensemble's members each learn on their own (the mean
    of their losses), not jointly through their mean reconstruction, so they stay independent
    models whose errors average out; a single model is an ensemble of one."""
    return torch.stack([loss_fn(r, target)
                        for r in model.member_reconstructions(code)]).mean(dim=0)


def _train_epoch(model, x, y, loss_fn, class_weight: float, optimizer, cfg: TrainConfig,
                 generator, on_batch, pool: torch.Tensor | None = None,
                 precision: tuple | None = None, robust: str = "none") -> float:
    """One pass over ``x`` (or its images ``pool``) in a fresh random order; returns the mean
    reconstruction loss.

    With class indices ``y`` (N,) the model's ``class_head`` is trained on the codes too:
    ``class_weight`` times the cross-entropy is added to the loss; ``robust`` is how the
    per-image losses make the batch loss (:func:`reconad.losses.robust_batch_loss`; the
    returned mean is of the plain per-image losses). Batches are built on the
    CPU and sent to the model's device; ``precision`` is (device, autocast dtype or None,
    grad scaler) — the forward pass runs under autocast, the losses in float32.
    """
    model.train()
    device, dtype, scaler = precision or (torch.device("cpu"), None, grad_scaler(
        torch.device("cpu"), None))

    def full_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The loss in float32 even under autocast (SSIM's convolutions included)."""
        if dtype is None:
            return loss_fn(x_hat, x)
        with torch.autocast(device.type, enabled=False):
            return loss_fn(x_hat.float(), x.float())
    order = torch.randperm(len(x) if pool is None else len(pool), generator=generator)
    if pool is not None:
        order = pool[order]
    total, seen = 0.0, 0
    for batch, target in x.batches(order, cfg.batch_size):  # target (B, C, H, W) float32
        if cfg.crop is not None:  # patch training: one random crop of each image
            target = random_crops(target, cfg.crop, generator)  # (B, C, crop, crop)
        if cfg.augment_rotation or cfg.augment_zoom or cfg.augment_shift:
            target = augment_batch(
                target, cfg.augment_rotation, cfg.augment_zoom, cfg.augment_shift, generator
            )
        if cfg.augment_flip:
            target = random_flips(target, generator)
        inputs = target
        if cfg.denoise != "none":
            inputs = corrupt(target, cfg.denoise, cfg.denoise_level, generator)
        inputs = to_device(inputs, device)
        target = inputs if inputs is target else to_device(target, device)
        with autocast(device, dtype):
            code = model.encode(inputs)
            per_image = _reconstruction_loss(model, code, target, full_loss)  # (B,) float32
            loss = robust_batch_loss(per_image, robust)
            if cfg.l1_latent:
                loss = loss + cfg.l1_latent * code.float().abs().mean()
            if y is not None:
                logits = model.class_logits(code)  # one per ensemble member, each learns alone
                labels = to_device(y[batch], device)
                loss = loss + class_weight * sum(
                    F.cross_entropy(member.float(), labels) for member in logits) / len(logits)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(per_image.detach().sum())
        seen += len(target)
        on_batch(len(target), total / seen)
    if not np.isfinite(total):
        raise ReconadError(
            "training diverged (the loss became NaN or infinite); lower train.lr or use "
            "train.optimizer=adam"
        )
    return total / max(seen, 1)


def fit_model(
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
    """Train ``model`` in place on ``train_x`` (N, C, H, W) to reconstruct its input.

    ``train_y`` (N,) class indices 0..K-1 of the normal images train the model's
    ``class_head`` alongside (weight ``loss_cfg.class_weight``); the validation loss stays the
    reconstruction loss. With ``train_cfg.trim`` each epoch trains only on the images whose
    loss under the current model is not among the highest ``trim`` fraction (robust training
    on a contaminated pool: the odd ones stay unlearnt, so they keep a high score).
    Early stopping watches the mean validation loss of ``val_x`` (normal images only: no anomaly
    labels are needed) and restores the best weights at the end. Ctrl-C stops training and keeps
    the best model so far (``History.interrupted``). Fixed seeds give identical numbers run to run.

    ``checkpoint`` names a file rewritten after every epoch with everything the next epoch
    depends on (weights, optimizer, scheduler, every random state, early-stopping state,
    history). When it exists at the start, training continues after its last epoch and ends
    exactly as an uninterrupted run with the same seed would.
    """
    set_threads(train_cfg.threads)
    device = resolve_device(train_cfg.device)
    dtype = amp_dtype(train_cfg.amp, device)
    model.to(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = TrainingImages(train_x)
    xv = None if val_x is None or len(val_x) == 0 else TrainingImages(val_x)
    y = None
    if train_y is not None and model.n_classes:
        y = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    loss_fn = loss_from_config(loss_cfg)
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_scheduler(optimizer, train_cfg)
    precision = (device, dtype, grad_scaler(device, dtype))

    history = History()
    best_state = copy.deepcopy(model.state_dict())
    best, bad_epochs, first_epoch, seconds_before = float("inf"), 0, 1, 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = Checkpoint.load(checkpoint)
        state.restore(model, optimizer, scheduler, generator, precision[2])
        best_state, best, bad_epochs = state.best_model, state.best, state.bad_epochs
        history.rows, history.best_epoch = state.history, state.best_epoch
        history.best_val_loss, history.stopped_early = state.best_val_loss, state.stopped
        history.resumed_after = state.epoch
        first_epoch = state.epoch + 1
        seconds_before = state.seconds
    started = time.perf_counter()
    bar = ProgressBar(progress, train_cfg.epochs)
    try:
        with bar:
            for epoch in range(first_epoch, train_cfg.epochs + 1):
                if history.stopped_early:  # the checkpoint was written by the stopping epoch
                    break
                epoch_start = time.perf_counter()
                pool = (trimmed(model, x, loss_fn, train_cfg.trim) if train_cfg.trim > 0
                        else None)
                bar.start_epoch(epoch, len(x) if pool is None else len(pool))
                train_loss = _train_epoch(
                    model, x, y, loss_fn, loss_cfg.class_weight, optimizer, train_cfg,
                    generator, bar.advance, pool, precision=precision, robust=loss_cfg.robust
                )
                val_loss = mean_loss(model, xv, loss_fn) if xv is not None else None
                watched = val_loss if val_loss is not None else train_loss
                lr = optimizer.param_groups[0]["lr"]
                history.rows.append({
                    "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                    "seconds": round(time.perf_counter() - epoch_start, 4),
                })
                bar.end_epoch(train_loss, val_loss)
                if watched < best - train_cfg.min_delta:
                    best, bad_epochs = watched, 0
                    history.best_epoch, history.best_val_loss = epoch, watched
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_epochs += 1
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(watched)
                elif scheduler is not None:
                    scheduler.step()
                if train_cfg.patience is not None and bad_epochs >= train_cfg.patience:
                    history.stopped_early = True
                if checkpoint is not None:
                    Checkpoint.capture(
                        epoch, model, optimizer, scheduler, generator, precision[2],
                        best_model=best_state, best=best, bad_epochs=bad_epochs,
                        history=history.rows, best_epoch=history.best_epoch,
                        best_val_loss=history.best_val_loss, stopped=history.stopped_early,
                        seconds=seconds_before + time.perf_counter() - started,
                    ).save(checkpoint)
                if history.stopped_early:
                    break
    except KeyboardInterrupt:
        history.interrupted = True
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = seconds_before + time.perf_counter() - started
    return history

"""Resumable training: everything the next epoch depends on, written after every epoch.

A :class:`Checkpoint` is a plain record of state dicts, random states, numbers and lists,
saved with ``torch.save`` and read back with ``weights_only=True`` (no code is unpickled).
Training that resumes from one ends exactly as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconad.errors import ReconadError
from reconad.files import atomic_file


@dataclass
class Checkpoint:
    """The training state after ``epoch`` (the file holds these fields as a plain dict)."""

    epoch: int
    model: dict
    optimizer: dict
    scheduler: dict | None
    random: dict
    """Every random state training draws from (:func:`random_states`)."""
    scaler: dict
    """The gradient scaler's state (float16 on CUDA: the loss scale it had reached)."""
    best_model: dict
    best: float
    bad_epochs: int
    history: list
    best_epoch: int
    best_val_loss: float | None
    stopped: bool
    seconds: float

    @classmethod
    def capture(cls, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, generator: torch.Generator, scaler: Any,
                **progress: Any) -> Checkpoint:
        """The state of a training loop after ``epoch``; ``progress`` holds the early-stopping
        and history fields."""
        return cls(epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                   scheduler=None if scheduler is None else scheduler.state_dict(),
                   random=random_states(generator), scaler=scaler.state_dict(), **progress)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, generator: torch.Generator, scaler: Any) -> None:
        """Put the weights, optimizer, scheduler, random and loss-scale states back."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        if scheduler is not None:
            scheduler.load_state_dict(self.scheduler)
        set_random_states(self.random, generator)
        if self.scaler:
            scaler.load_state_dict(self.scaler)

    def save(self, path: str | Path) -> None:
        """Write the checkpoint atomically."""
        with atomic_file(path) as tmp:
            torch.save(asdict(self), tmp)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint written by :meth:`save`.

        Raises:
            ReconadError: a damaged or foreign file (one line: delete it to start afresh).
        """
        fix = "delete it to train from the start"
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # torch raises many types for a damaged file
            raise ReconadError(f"cannot read the training checkpoint {path} "
                               f"({type(exc).__name__}); {fix}") from None
        names = {f.name for f in fields(cls)}
        if not isinstance(state, dict) or set(state) != names:
            raise ReconadError(f"{path} is not a training checkpoint of this version; {fix}")
        return cls(**state)


def random_states(generator: torch.Generator) -> dict:
    """Every random state training draws from: torch's global one (dropout) and each CUDA
    device's, the batching and augmentation ``generator``, numpy's and Python's (as tensors and
    plain numbers)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(), "cuda": cuda, "generator": generator.get_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_random_states(states: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    generator.set_state(states["generator"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))

"""Training and validation images handed out as float32 batches, in memory or streamed.

The training loop (:mod:`reconad.train`) draws the batch order; :class:`TrainingImages` turns
each batch of positions into float32 images in [0, 1] — from one in-memory tensor of the stored
dtype (uint8 stays uint8), or from disk for a streamed dataset (a memory-mapped ``.npy`` or
image files decoded ahead by ``DataLoader`` workers). Both give the same values.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from reconad.data import ImageRows, float_batch, load_ahead

LOADER_WORKERS = 4  # at most this many processes decode streamed image files ahead


class TrainingImages:
    """Training or validation images handed out as float32 batches in [0, 1].

    In memory (the fast path) the images are one tensor of their stored dtype: uint8 stays
    uint8 (a quarter of float32) and only each batch is converted. Streamed (``train_x`` an
    :class:`reconad.data.ImageRows` or a ``np.memmap``) nothing is held: each batch is
    read from disk. Both give the same float32 values (:func:`reconad.data.float_batch`),
    so a streamed fit equals an in-memory one.
    """

    def __init__(self, x: np.ndarray | ImageRows) -> None:
        self.streamed = isinstance(x, (ImageRows, np.memmap))
        self.x = x if self.streamed else torch.from_numpy(np.ascontiguousarray(x))

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, order: torch.Tensor, size: int):
        """``(positions, float32 images)`` of ``order`` taken ``size`` at a time.

        Streamed image files are decoded ahead by a ``DataLoader``'s worker processes over
        those batches (the order is drawn here, so it is the same with or without them).
        """
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        workers = min(LOADER_WORKERS, os.cpu_count() or 1, len(chunks))
        if not (isinstance(self.x, ImageRows) and self.x.decodes_files and workers > 1):
            workers = 0
        yield from zip(chunks, load_ahead(self.__getitem__, chunks, workers), strict=True)

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The images at ``index`` (positions or a slice), float32 (B, C, H, W)."""
        if self.streamed:
            if isinstance(index, torch.Tensor):
                index = index.numpy()
            return torch.from_numpy(float_batch(np.asarray(self.x[index])))
        part = self.x[index]
        if part.dtype == torch.float32:
            return part
        return torch.from_numpy(float_batch(part.numpy()))

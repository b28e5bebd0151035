"""Loading images: named IDX datasets and the user's own files, as one :class:`Dataset`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Images as float32 ``(N, C, H, W)`` in [0, 1]; labels int64 ``(N,)`` or None."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray | None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

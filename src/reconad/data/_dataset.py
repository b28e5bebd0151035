"""What every loader returns: train and test images, labels, class names, defect masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Images ``(N, C, H, W)`` in their stored dtype (uint8 grey levels, or float32 in [0, 1]),
    or :class:`reconad.data.ImageRows` left on disk (``data.stream``); labels int64
    ``(N,)`` or None. A batch becomes float32 in [0, 1] by :func:`reconad.data.float_batch`."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray | None
    train_index: np.ndarray | None = None
    """Position of each training image in its source (after subsetting), for stable ids."""
    test_index: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    """Name of each label value (folder names, text labels, a named dataset's classes), so a
    config may select classes by name; None when the labels are plain numbers."""
    masks: np.ndarray | None = None
    """bool ``(N_test, H, W)`` defect masks of the test images (True = defect pixel; all False
    for normal images) when the source has them (a defect dataset folder), else None."""
    train_ids: np.ndarray | None = None
    """str ``(N_train,)``: each training image's file, relative to ``data.source``
    (``good/0001.png``, ``train/good/000.png``), when the images come from files; None for
    arrays and named datasets (their ids are positions, ``train:57``)."""
    test_ids: np.ndarray | None = None
    """str ``(N_test,)``: the test images' files likewise; those of a separate
    ``data.test_source`` folder are relative to it, behind ``test/`` (``test/good/0001.png``)."""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

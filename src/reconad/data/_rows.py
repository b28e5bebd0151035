"""Images left on disk and read by row: what training and scoring see when ``data.stream`` is on.

An :class:`ImageRows` is a lazy ``(N, C, H, W)`` view of a memory-mapped array (a ``.npy``,
in its stored dtype) or of a :class:`reconad.data.Collection` (a folder of image files,
decoded on demand) through a list of rows. Selecting rows (``rows[idx]``, ``rows[a:b]``)
reads nothing and returns another view, so scenarios can pick their sets from a dataset
larger than memory; ``np.asarray(rows)`` reads the rows it holds. Training and scoring only
ever ask for one batch at a time.

>>> rows = ImageRows(np.arange(24, dtype=np.uint8).reshape(6, 1, 2, 2))
>>> part = rows[np.array([4, 1])]      # a view: nothing read yet
>>> part.shape, np.asarray(part)[:, 0, 0, 0].tolist()
((2, 1, 2, 2), [16, 4])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reconad.data._images import as_images
from reconad.errors import ReconadError


class ImageRows:
    """A lazy selection of rows of a memory-mapped array or a collection of image files.

    Args:
        source: an ``(M, C, H, W)`` array of stored dtype (typically ``np.load(...,
            mmap_mode="r")``) or a :class:`reconad.data.Collection`.
        rows: the source positions this view holds, in order (default: all).
        shape: ``(C, H, W)`` of a collection's images (taken from an array's shape).
    """

    def __init__(self, source: Any, rows: np.ndarray | None = None,
                 shape: tuple[int, int, int] | None = None) -> None:
        self.source = source
        self.rows = (np.arange(len(source), dtype=np.int64) if rows is None
                     else np.asarray(rows, dtype=np.int64))
        self._is_array = isinstance(source, np.ndarray)
        if self._is_array:
            self.image_shape = tuple(int(s) for s in source.shape[1:])
            self.dtype = source.dtype
        else:
            if shape is None:
                raise ReconadError("ImageRows over a collection needs the images' (C, H, W)")
            self.image_shape, self.dtype = tuple(shape), np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, C, H, W)``."""
        return (len(self.rows), *self.image_shape)

    @property
    def decodes_files(self) -> bool:
        """Whether reading decodes image files (a collection) rather than slicing an array."""
        return not self._is_array

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> ImageRows:
        """The rows at ``key`` (a slice, integer array or boolean mask): a view, nothing read."""
        if isinstance(key, (int, np.integer)):
            raise TypeError("index ImageRows with a slice or an array of positions")
        return ImageRows(self.source, self.rows[key], self.image_shape)

    def read(self) -> np.ndarray:
        """The rows' images, ``(n, C, H, W)`` in the stored dtype (float32 for files)."""
        if not len(self.rows):
            return np.empty(self.shape, dtype=self.dtype)
        order = np.argsort(self.rows, kind="stable")
        wanted = self.rows[order]  # ascending: sequential reads from the disk
        if self._is_array:
            first, last = int(wanted[0]), int(wanted[-1])
            if last - first + 1 == len(wanted) and np.all(np.diff(wanted) == 1):
                got = np.asarray(self.source[first:last + 1])
            else:
                got = np.asarray(self.source[wanted])
            if got.dtype != np.uint8:  # other stored types are checked as they are read
                got = as_images(got, "streamed images", to_float=False)
        else:
            unique, back = np.unique(wanted, return_inverse=True)
            batch = self.source.batch(unique)
            if batch.bad:
                position, reason = batch.bad[0]
                raise ReconadError(f"cannot read training image {position}: {reason}")
            got = batch.x[back]
        out = np.empty_like(got)
        out[order] = got  # back to the asked order
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype)

    def concat(self, *others: ImageRows) -> ImageRows:
        """This view followed by ``others`` over the same source."""
        for other in others:
            if other.source is not self.source:
                raise ValueError("ImageRows.concat needs views of the same source")
        return ImageRows(self.source, np.concatenate([self.rows] + [o.rows for o in others]),
                         self.image_shape)


def decoded_bytes(n: int, image_shape: tuple[int, ...]) -> int:
    """Bytes ``n`` images of ``image_shape`` take as float32 (what training used to hold)."""
    return 4 * n * int(np.prod(image_shape))


def memory_budget(fraction: float = 0.25) -> int:
    """``fraction`` of the memory available now (``os.sysconf``; 4 GiB where it cannot tell).

    ``data.stream=auto`` streams a dataset whose decoded float32 images exceed this.
    """
    import os

    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this system: assume 4 GiB
        available = 4 << 30
    return int(fraction * available)

"""The one rule for what counts as images, used by the detector and every data loader.

Images are an array ``(N, H, W)`` (one channel is added) or ``(N, C, H, W)`` holding at least
one pixel, of numbers, read as follows (pixel values are never silently rescaled otherwise):

- ``uint8``: grey levels 0..255, divided by 255;
- any other integer type (``int64`` from a CSV or ``np.save``, ``int16``, ``uint16``, ...): the
  same grey levels, so every value must lie in 0..255, and it is divided by 255 like ``uint8``
  (``int64`` 255 and ``uint8`` 255 both become 1.0);
- ``bool``: 0.0 and 1.0;
- floats: finite values already in [0, 1], kept as they are.

Anything else (NaN, infinity, out-of-range values, complex numbers, text, an empty array, a
wrong number of axes) raises a :class:`~reconad.errors.ReconadError` naming the fix.

>>> as_images(np.array([[[0, 255]]], dtype=np.int64))  # (1, 1, 2) -> (1, 1, 1, 2)
array([[[[0., 1.]]]], dtype=float32)
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from reconad.errors import ReconadError

_SHAPES = "(N, H, W) or (N, C, H, W)"


def as_images(x: Any, what: str = "images", *, to_float: bool = True) -> np.ndarray:
    """Validate images and return them as ``(N, C, H, W)``, by default float32 in [0, 1].

    Args:
        x: an array-like or a torch tensor, ``(N, H, W)`` or ``(N, C, H, W)``; see the module
            docstring for the accepted pixel types and values.
        what: what the images are called in error messages, e.g. ``"training images"`` or a
            file name.
        to_float: True: float32 in [0, 1] (integers divided by 255). False: the validated
            ``(N, C, H, W)`` array in its stored dtype (no copy where none is needed), e.g. to
            keep ``uint8`` images small until a batch is made; ``as_images(batch)`` then
            converts the batch by the same rule.

    Returns:
        ``(N, C, H, W)`` images: float32 in [0, 1], or the stored dtype when ``to_float`` is
        False.

    Raises:
        ReconadError: a wrong shape, no pixels, non-numbers, NaN or infinity, integers outside
            0..255 or floats outside [0, 1].
    """
    torch = sys.modules.get("torch")  # a tensor can only exist if torch was imported already
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    given = x.shape
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim != 4 or x.size == 0:
        raise ReconadError(f"{what} must be a non-empty array of shape {_SHAPES}; got shape "
                           f"{given}")
    kind = x.dtype.kind
    if kind in "ui" and x.dtype != np.uint8:
        _check_range(x, 0, 255, what, "integer images must hold 0..255 grey levels: rescale "
                     "them, or store floats in [0, 1]")
    elif kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            raise ReconadError(f"{x.size - int(np.count_nonzero(finite))} pixel values of {what} "
                               "are NaN or infinite; fix or drop those images")
        _check_range(x, 0, 1, what, "scale float images to [0, 1]: divide 8-bit images by 255")
    elif kind not in "bu":  # bool and uint8 hold only valid values
        raise ReconadError(f"{what} holds {x.dtype} values; images must be numbers: uint8 or "
                           "other integers in 0..255, or floats in [0, 1]")
    if not to_float:
        return x
    out = x.astype(np.float32)
    if kind in "ui":
        out /= np.float32(255.0)
    return out


def stored_images(x: Any, what: str = "images") -> np.ndarray:
    """Validate images and keep them small: ``(N, C, H, W)`` uint8 for any integer grey levels
    (``int64`` from a CSV becomes ``uint8``, same values), floats as float32, ``bool`` as is.

    Loaders keep images like this until a batch is made; :func:`float_batch` then converts
    each batch exactly as :func:`as_images` would have converted the whole set.
    """
    x = as_images(x, what, to_float=False)
    if x.dtype.kind in "ui" and x.dtype != np.uint8:
        x = x.astype(np.uint8)  # values checked to lie in 0..255 above
    elif x.dtype.kind == "f" and x.dtype != np.float32:
        x = x.astype(np.float32)  # what as_images would make of them
    return x


def float_batch(x: np.ndarray) -> np.ndarray:
    """Already validated images (any stored dtype) -> contiguous float32 in [0, 1].

    The rule of :func:`as_images` without its checks, for one batch at a time: integers are
    divided by 255, bool becomes 0.0/1.0, floats are cast to float32 (no copy when they are
    float32 and contiguous already), so a batch's values equal ``as_images(whole)[batch]``.

    >>> float_batch(np.array([[[[0, 51, 255]]]], dtype=np.uint8))
    array([[[[0. , 0.2, 1. ]]]], dtype=float32)
    """
    if x.dtype.kind in "ui":
        out = x.astype(np.float32)
        out /= np.float32(255.0)
        return out
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_range(x: np.ndarray, low: int, high: int, what: str, fix: str) -> None:
    lo, hi = x.min(), x.max()
    if lo < low or hi > high:
        bad = int(np.count_nonzero((x < low) | (x > high)))
        span = f"{low}..{high}" if x.dtype.kind in "ui" else f"[{low}, {high}]"
        raise ReconadError(f"{bad} pixel values of {what} lie outside {span} (min {lo:g}, max "
                           f"{hi:g}); {fix}")

"""The user's images left on disk (``data.stream``): a ``.npy`` memory-mapped, a folder listed.

:func:`open_streamed` opens a source as :class:`reconad.data.ImageRows` plus its labels and
file ids, reading no pixels (a folder's first image only, for its shape);
:func:`should_stream` decides ``data.stream=auto`` from the size the images would take as
float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reconad.config import DataConfig
from reconad.data._collections import open_collection
from reconad.data._folders import list_image_folder, read_image
from reconad.data._prepare import prepare, prepare_changes
from reconad.data._rows import ImageRows, decoded_bytes, memory_budget
from reconad.data._user import UserImages, names_to_indices, read_raw_arrays
from reconad.errors import ReconadError

STREAMABLE = "a .npy file or a folder of images"


def streamable(path: Path) -> bool:
    """Whether ``path`` can be read batch by batch from disk (a ``.npy`` or a folder)."""
    return path.is_dir() or path.suffix.lower() == ".npy"


def should_stream(cfg: DataConfig, path: Path | None) -> bool:
    """``data.stream`` resolved for the source ``path`` (None: a named dataset).

    ``auto`` streams a streamable source whose images as float32 would exceed
    :func:`reconad.data.memory_budget`; ``true`` insists (an error for a source that
    cannot be streamed); ``false`` never streams.
    """
    if cfg.stream is False:
        return False
    can = path is not None and streamable(path) and (
        cfg.test_source is None or streamable(Path(cfg.test_source).expanduser()))
    if cfg.stream is True:
        if not can:
            raise ReconadError(
                f"data.stream=true reads {STREAMABLE} from disk, but data.source "
                f"{cfg.source!r} (or data.test_source) is not one; save the images with "
                "np.save, or set data.stream=auto")
        return True
    return can and decoded_bytes(*_count_and_shape(path)) > memory_budget()


def open_streamed(path: Path, cfg: DataConfig, classes: tuple[str, ...] | None = None,
                  ) -> UserImages:
    """The images of a ``.npy`` or a folder as :class:`reconad.data.ImageRows`, with their
    labels, class names and (a folder's) file ids, nothing decoded: a ``.npy`` is
    memory-mapped (stored dtype kept, or prepared batch by batch when
    ``data.resize``/``data.grayscale`` change it), a folder's files are decoded when a batch
    asks for them."""
    options = {"resize": cfg.resize, "grayscale": cfg.grayscale}
    if path.is_dir():
        shape = _first_image_shape(path, cfg)
        collection = open_collection(path, shape, **options)
        labels, names = collection.labels, collection.class_names
        if names is not None and classes is not None:  # test folders: the training names
            _, label_names = list_image_folder(path)
            labels, names = names_to_indices(label_names, classes)
        ids = np.array(collection.ids(np.arange(len(collection))))
        return UserImages(ImageRows(collection, shape=shape), labels, names, ids=ids)
    collection = open_collection(path, (1, 1, 1), **options)  # a .npy: ArrayCollection
    images = collection.images  # (N, C, H, W) memory map, stored dtype
    _check_dtype(images, path)
    if prepare_changes(images.shape[1:], cfg.resize, cfg.grayscale):
        shape = tuple(collection.batch(np.arange(1)).x.shape[1:])
        return UserImages(ImageRows(collection, shape=shape), None)
    return UserImages(ImageRows(images), None)


def _count_and_shape(path: Path) -> tuple[int, tuple[int, ...]]:
    """Number of images and (C, H, W) as stored, read from the ``.npy`` header or the
    folder listing and its first image."""
    if path.is_dir():
        files, _ = list_image_folder(path)
        return len(files), read_image(files[0], path).shape
    images = read_raw_arrays(path)[0]
    return len(images), images.shape[1:]


def _first_image_shape(folder: Path, cfg: DataConfig) -> tuple[int, int, int]:
    """(C, H, W) every image of ``folder`` is made into: its first image's, prepared."""
    files, _ = list_image_folder(folder)
    first = prepare(read_image(files[0], folder)[None], cfg.resize, cfg.grayscale)
    return tuple(int(s) for s in first.shape[1:])


def _check_dtype(images: np.ndarray, path: Path) -> None:
    """Streamed arrays are checked batch by batch, except their type, checked here."""
    if images.dtype.kind not in "uifb":
        raise ReconadError(f"{path} holds {images.dtype} values; images must be numbers: uint8 "
                           "or other integers in 0..255, or floats in [0, 1]")

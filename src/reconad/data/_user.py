"""The user's own images: ``.npz``/``.npy`` arrays, a folder of image files, or a CSV.

Whatever the input, the output is ``(N, C, H, W)`` with C = 1 or 3 in its stored form (uint8
grey levels stay uint8, a quarter of float32; floats become float32 in [0, 1]), plus int64
labels ``(N,)`` or None. Pixel values follow :func:`reconad.data.as_images`, the rule
the detector applies too: integers are 0..255 grey levels divided by 255, floats must already
lie in [0, 1].

A folder ``digits/`` with ``digits/0/*.png``, ``digits/1/*.png``, ... (not shipped):

>>> x, y = load_images("digits/")  # doctest: +SKIP
>>> x.shape, x.dtype, y[:3]  # doctest: +SKIP
((120, 1, 28, 28), dtype('float32'), array([0, 0, 0]))
"""

from __future__ import annotations

import csv
import math
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reconad.data._folders import FORMATS, IMAGE_SUFFIXES, file_id, list_image_folder, read_image
from reconad.data._idx import read_idx
from reconad.data._images import float_batch, stored_images
from reconad.data._prepare import fit_folder_images, prepare
from reconad.errors import ReconadError


@dataclass(frozen=True)
class UserImages:
    """Images loaded from one user path (``x_test``/``y_test`` only from an ``.npz``)."""

    x: np.ndarray
    """``(N, C, H, W)``: uint8 grey levels as stored, or float32 in [0, 1] (see
    :func:`reconad.data.stored_images`)."""
    y: np.ndarray | None
    """int64 ``(N,)`` or None (unlabelled)."""
    class_names: tuple[str, ...] | None = None
    """Name of each label value when labels came from names (folders, text labels)."""
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    ids: np.ndarray | None = None
    """str ``(N,)``: each image's file relative to the folder read (``good/0001.png``), for
    images read from files; None for arrays and CSV rows."""


def load_user(
    path: str | Path,
    resize: tuple[int, int] | None = None,
    grayscale: bool = False,
    label_column: str = "label",
    classes: Sequence[str] | None = None,
) -> UserImages:
    """Load the user's images from a file or folder.

    Args:
        path: ``.npz`` (arrays ``x``/``images``, optional ``y``/``labels``, ``x_test``/``y_test``),
            ``.npy`` (images only), a folder of images (labels from sub-folder names, sorted;
            unlabelled when the images lie directly in it), a ``.csv`` (label column + one grey
            pixel per column), or a single image file.
        resize: (height, width) every image is resized to (bilinear); None = keep sizes.
        grayscale: convert RGB images to one grey channel (ITU-R 601-2 luma).
        label_column: name of the label column of a CSV.
        classes: class names already in use (the training data's), so that a test folder maps
            the same names to the same integers; new names get the next integers.

    Returns:
        The images (float32 ``(N, C, H, W)`` in [0, 1]) and labels.

    Raises:
        ReconadError: a missing or unreadable input, values out of range, bad shapes, etc.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        return _load_folder(path, resize, grayscale, classes)
    if not path.is_file():
        raise ReconadError(f"{path} does not exist; give {FORMATS}")
    if suffix in (".npz", ".npy"):
        data = _load_arrays(path, classes)
    elif suffix == ".csv":
        data = _load_csv(path, label_column, classes)
    elif suffix in IMAGE_SUFFIXES:
        data = UserImages(read_image(path, path.parent)[None], None,
                          ids=np.array([file_id(path, path.parent)]))
    elif "idx3-ubyte" in path.name:  # an MNIST-style IDX image file (.gz or raw)
        data = UserImages(stored_images(to_nchw(read_idx(path), str(path)), str(path)), None)
    else:
        raise ReconadError(f"{path}: unsupported file type {suffix or '(none)'!r}; give {FORMATS}")
    return UserImages(
        x=prepare(data.x, resize, grayscale),
        y=data.y,
        class_names=data.class_names,
        x_test=None if data.x_test is None else prepare(data.x_test, resize, grayscale),
        y_test=data.y_test,
        ids=data.ids,
    )


def load_images(
    path: str | Path,
    resize: tuple[int, int] | None = None,
    grayscale: bool = False,
    label_column: str = "label",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (and labels if any) of any supported kind, e.g. for ``reconad score INPUT``.

    For an ``.npz`` this returns ``x``/``y`` (not ``x_test``). See :func:`load_user`.

    Returns:
        float32 ``(N, C, H, W)`` in [0, 1], and int64 ``(N,)`` labels or None.
    """
    data = load_user(path, resize, grayscale, label_column)
    return float_batch(data.x), data.y


# --- arrays -------------------------------------------------------------------------------


def to_nchw(images: np.ndarray, name: str) -> np.ndarray:
    """View ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (C = 1 or 3) as NCHW."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        first, last = images.shape[1] in (1, 3), images.shape[3] in (1, 3)
        if first:  # (N, C, H, W) wins when both could be channels: it is our own layout
            return images
        if last:
            return images.transpose(0, 3, 1, 2)
    raise ReconadError(
        f"{name} has shape {images.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
        "with C = 1 or 3 channels"
    )


def encode_labels(
    values: np.ndarray, name: str, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Labels as int64: integers stay, text labels become indices of their sorted names.

    Args:
        values: ``(N,)`` (or ``(N, 1)``) labels: integers, integral floats, or text (class
            names).
        name: what the labels are called in error messages.
        classes: names already in use (kept first, in this order); new names are appended sorted.

    Returns:
        int64 labels and the class names (None when the labels were numbers).
    """
    if values.ndim == 2 and values.shape[1] == 1:  # (N, 1), as Keras and MATLAB save labels
        values = values[:, 0]
    if values.ndim != 1:
        raise ReconadError(f"{name} has shape {values.shape}; labels must be one value per image")
    if values.dtype.kind in "USO":
        text = values.astype(str)
        try:
            return text.astype(np.int64), None
        except ValueError:  # real names, not numbers written as text
            return names_to_indices(text.tolist(), classes)
    if values.dtype.kind in "uib":
        return values.astype(np.int64), None
    if values.dtype.kind == "f" and np.all(np.isfinite(values)):
        if np.all(values == np.round(values)):
            return values.astype(np.int64), None
    raise ReconadError(f"{name} must hold whole numbers or class names, not {values.dtype} values")


def names_to_indices(
    names: Sequence[str], classes: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map class names to ints: ``classes`` first in their order, then new names sorted."""
    known = list(classes or [])
    known += sorted(set(names) - set(known))
    index = {n: i for i, n in enumerate(known)}
    return np.array([index[n] for n in names], dtype=np.int64), tuple(known)


def _load_arrays(path: Path, classes: Sequence[str] | None) -> UserImages:
    """``.npy`` (images) or ``.npz`` (x/images, y/labels, x_test, y_test)."""
    arrays = _open_arrays(path)
    if isinstance(arrays, np.ndarray):  # .npy
        return UserImages(stored_images(to_nchw(arrays, str(path)), str(path)), None)
    x_key, y_key = _image_keys(path, arrays)
    x, y, names = _images_and_labels(path, arrays, x_key, y_key, classes)
    if "x_test" not in arrays:
        if "y_test" in arrays:
            raise ReconadError(f"{path} has 'y_test' but no 'x_test'; add the test images")
        return UserImages(x, y, names)
    y_test_key = "y_test" if "y_test" in arrays else None
    x_test, y_test, test_names = _images_and_labels(path, arrays, "x_test", y_test_key, names)
    return UserImages(x, y, test_names or names, x_test, y_test)


def read_raw_arrays(
    path: str | Path,
) -> tuple[np.ndarray, str, np.ndarray | None, tuple[str, ...] | None]:
    """The images of a ``.npy``/``.npz`` in their stored dtype, for reading in batches.

    A ``.npy`` is memory-mapped (nothing is read until a batch is taken); an ``.npz``'s
    ``x``/``images`` array is read whole but stays in its stored dtype (uint8 stays uint8).
    ``x_test`` is ignored.

    Returns:
        ``(images (N, C, H, W), their name in messages, int64 labels or None, class names or
        None)``.
    """
    path = Path(path)
    arrays = _open_arrays(path, mmap=True)
    if isinstance(arrays, np.ndarray):
        return to_nchw(arrays, str(path)), str(path), None, None
    x_key, y_key = _image_keys(path, arrays)
    name = f"{path}[{x_key!r}]"
    x = to_nchw(arrays[x_key], name)
    if y_key is None:
        return x, name, None, None
    y, names = _labels_for(path, arrays, x_key, y_key, len(x), None)
    return x, name, y, names


def _open_arrays(path: Path, mmap: bool = False) -> np.ndarray | dict[str, np.ndarray]:
    """A ``.npy``'s array (memory-mapped if ``mmap``) or an ``.npz``'s arrays by name."""
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise ReconadError(f"{path} is a damaged NumPy file ({_first_line(exc)}); save it "
                               "again") from None
        raise ReconadError(
            f"{path} cannot be loaded without pickle ({_first_line(exc)}); save plain numeric "
            "arrays with np.savez"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ReconadError(f"{path} is not a readable NumPy file ({_first_line(exc)}); save it "
                           "again") from None
    except Exception as exc:  # zlib, zipfile and NumPy's header parser raise many more types
        raise ReconadError(f"{path} is a damaged NumPy file ({type(exc).__name__}); save it "
                           "again") from None


def _image_keys(path: Path, arrays: dict[str, np.ndarray]) -> tuple[str, str | None]:
    """Names of the image array and of the label array (None: unlabelled) of an ``.npz``."""
    x_key = next((k for k in ("x", "images") if k in arrays), None)
    if x_key is None:
        raise ReconadError(
            f"{path} holds arrays {sorted(arrays) or 'none'}; expected the images in an array "
            "named 'x' or 'images' (optional: labels 'y' or 'labels', test data 'x_test' and "
            "'y_test')"
        )
    return x_key, next((k for k in ("y", "labels") if k in arrays), None)


def _first_line(exc: Exception) -> str:
    """An exception's message on one line (NumPy's can span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _images_and_labels(
    path: Path, arrays: dict[str, np.ndarray], x_key: str, y_key: str | None,
    classes: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    name = f"{path}[{x_key!r}]"
    x = stored_images(to_nchw(arrays[x_key], name), name)
    if y_key is None:
        return x, None, None
    y, names = _labels_for(path, arrays, x_key, y_key, len(x), classes)
    return x, y, names


def _labels_for(
    path: Path, arrays: dict[str, np.ndarray], x_key: str, y_key: str, n_images: int,
    classes: Sequence[str] | None,
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    y, names = encode_labels(arrays[y_key], f"{path}[{y_key!r}]", classes)
    if len(y) != n_images:
        raise ReconadError(
            f"{path} has {n_images} images in {x_key!r} but {len(y)} labels in {y_key!r}; "
            "give one label per image"
        )
    return y, names


# --- CSV ----------------------------------------------------------------------------------


def _load_csv(path: Path, label_column: str, classes: Sequence[str] | None) -> UserImages:
    """One grey image per row: a label column (optional) and H*W pixel columns, H = W."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = [h.strip() for h in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconadError(f"cannot read {path} as a text CSV ({exc})") from None
    if not header:
        raise ReconadError(f"{path} is empty; it needs a header row and one image per row")
    if all(_is_number(h) for h in header):
        raise ReconadError(
            f"{path} has no header row; add a first line naming the columns (the label column "
            f"{label_column!r} and the pixel columns, e.g. label,1x1,1x2,...)"
        )
    label_at = header.index(label_column) if label_column in header else None
    n_pixels = len(header) - (label_at is not None)
    side = math.isqrt(n_pixels)
    if label_at is None and side * side != n_pixels:
        shown = ", ".join(header[:5]) + (", ..." if len(header) > 5 else "")
        raise ReconadError(
            f"{path} has no column {label_column!r} (columns: {shown}); set data.label_column "
            "to the name of the label column"
        )
    if side * side != n_pixels:
        raise ReconadError(
            f"{path} has {n_pixels} pixel columns, not a square number; a CSV must hold one "
            "square grey image per row (e.g. 784 = 28x28 pixel columns) plus the label column"
        )
    pixel_cols = [i for i in range(len(header)) if i != label_at]
    pixels = _loadtxt(path, pixel_cols, np.float64)  # (N, H*W)
    if len(pixels) == 0:
        raise ReconadError(f"{path} has a header but no rows; add one image per row")
    labels, names = None, None
    if label_at is not None:
        raw = _loadtxt(path, [label_at], str)[:, 0]
        labels, names = encode_labels(raw, f"column {label_column!r} of {path}", classes)
    # Written as whole numbers: 0..255 grey levels (huge ones stay floats: int64 would wrap).
    if np.all(pixels == np.round(pixels)) and np.all(np.abs(pixels) <= 2**53):
        pixels = pixels.astype(np.int64)
    x = stored_images(pixels.reshape(len(pixels), side, side), str(path))  # (N, 1, H, W)
    return UserImages(x, labels, names)


def _loadtxt(path: Path, columns: list[int], dtype) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # an empty body is reported by the caller
            warnings.simplefilter("ignore", UserWarning)
            return np.loadtxt(path, delimiter=",", skiprows=1, usecols=columns, dtype=dtype,
                              ndmin=2, encoding="utf-8-sig", quotechar='"')
    except ValueError as exc:
        detail = str(exc).split(";")[0].rstrip(".")  # drop NumPy's advice about usecols
        raise ReconadError(f"{path} cannot be read ({detail}); fix that row") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- folders of image files ---------------------------------------------------------------


def _load_folder(
    folder: Path, resize: tuple[int, int] | None, grayscale: bool, classes: Sequence[str] | None
) -> UserImages:
    """Images directly in ``folder`` (unlabelled) or in class sub-folders (labelled)."""
    files, label_names = list_image_folder(folder)
    images = [read_image(p, folder, stored=True) for p in files]  # each (C, H, W)
    images = fit_folder_images(images, [str(p) for p in files], resize, grayscale)
    x = np.stack(images)  # (N, C, H, W), uint8 for 8-bit files
    ids = np.array([file_id(p, folder) for p in files])
    if label_names is None:
        return UserImages(x, None, ids=ids)
    y, names = names_to_indices(label_names, classes)
    return UserImages(x, y, names, ids=ids)

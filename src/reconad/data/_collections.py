"""Image collections read batch by batch, so scoring needs the same memory for 1e3 or 1e7 images.

:func:`open_collection` turns a ``reconad score`` input into a :class:`Collection`: every image
has a stable id (the file's path relative to the input folder, ``file.npy[i]`` for arrays,
``test:123`` for a named dataset), a label and a class name where the input has them, and
:meth:`Collection.batch` decodes only the images asked for. Array images stay in their stored
dtype (a ``.npy`` is memory-mapped) until a batch is converted to float32 in [0, 1].
:func:`iter_batches` reads a collection in order, decoding files in worker processes (a PyTorch
``DataLoader``). The same collection object serves the single-process and the Ray engine.

>>> coll = open_collection("photos/", shape=(1, 28, 28))  # doctest: +SKIP
>>> coll.describe(np.arange(2))  # doctest: +SKIP
(['good/001.png', 'good/002.png'], array([0, 0]), ['good', 'good'])
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from reconad.data._folders import IMAGE_SUFFIXES, file_id, list_image_folder, read_image
from reconad.data._idx import read_idx
from reconad.data._images import as_images
from reconad.data._prepare import fit_image, prepare
from reconad.data._sources import SOURCES, load_named
from reconad.data._user import encode_labels, load_user, names_to_indices, read_raw_arrays, to_nchw
from reconad.errors import ReconadError

DEFAULT_BATCH = 256
# A memory-mapped .npy gives back the pages it has read after this many bytes (see
# ArrayCollection._release): scoring memory stays flat however large the file.
RELEASE_BYTES = 64 * 2**20
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Batch:
    """Some images of a collection, ready for the detector.

    Attributes:
        index: (n,) int64 positions in the collection of the images in ``x``, ascending.
        x: float32 (n, C, H, W) in [0, 1].
        bad: ``(position, one-line reason)`` of each unreadable file that was asked for.
    """

    index: np.ndarray
    x: np.ndarray
    bad: tuple[tuple[int, str], ...] = ()


class Collection:
    """Images addressed by position: ids, labels and class names, decoded on demand.

    Attributes:
        labels: (N,) int64 label of every image, or None (unlabelled).
        class_names: name of each label value, or None (labels are plain numbers).
    """

    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def ids(self, index: np.ndarray) -> list[str]:
        """Stable id of each image at ``index``."""
        raise NotImplementedError

    def batch(self, index: np.ndarray) -> Batch:
        """Decode and prepare the images at ``index`` (ascending positions)."""
        raise NotImplementedError

    def describe(self, index: np.ndarray) -> tuple[list[str], np.ndarray, list[str]]:
        """``(ids, labels (-1 = none), class names ("" = none))`` of the images at ``index``."""
        ids = self.ids(index)
        if self.labels is None:
            return ids, np.full(len(index), -1, dtype=np.int64), [""] * len(index)
        labels = self.labels[index]
        if self.class_names is None:
            return ids, labels, [""] * len(index)
        names = self.class_names
        return ids, labels, [names[v] if 0 <= v < len(names) else "" for v in labels.tolist()]


class ArrayCollection(Collection):
    """Images in one array (N, C, H, W) of their stored dtype, e.g. a memory-mapped ``.npy``."""

    def __init__(self, images: np.ndarray, name: str, id_format: str,
                 labels: np.ndarray | None = None, class_names: tuple[str, ...] | None = None,
                 resize: tuple[int, int] | None = None, grayscale: bool = False,
                 path: Path | None = None) -> None:
        self.images, self.name, self.id_format = images, name, id_format
        self.labels, self.class_names = labels, class_names
        self.resize, self.grayscale, self.path = resize, grayscale, path

    def __getstate__(self) -> dict:
        # A memory map is re-opened, not copied, when the collection travels to a Ray actor.
        state = dict(self.__dict__)
        if self.path is not None:
            state["images"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.images is None:
            self.images = read_raw_arrays(self.path)[0]

    def __len__(self) -> int:
        return len(self.images)

    def ids(self, index: np.ndarray) -> list[str]:
        return [self.id_format.format(i) for i in index.tolist()]

    def batch(self, index: np.ndarray) -> Batch:
        index = np.asarray(index, dtype=np.int64)
        contiguous = len(index) and index[-1] - index[0] + 1 == len(index)
        raw = self.images[index[0]:index[-1] + 1] if contiguous else self.images[index]
        raw = np.array(raw)  # out of the file mapping (a batch, in the stored dtype)
        self._release(raw.nbytes)
        x = as_images(raw, self.name)  # (n, C, H, W), the only float copy
        return Batch(index, prepare(x, self.resize, self.grayscale))

    def _release(self, nbytes: int) -> None:
        """Drop the pages of a memory-mapped ``.npy`` that were read, every
        :data:`RELEASE_BYTES`: they would otherwise count in the process's resident memory
        until the whole file had been (the operating system keeps them cached either way)."""
        mapping = getattr(self.images, "_mmap", None)
        if mapping is None or not hasattr(mapping, "madvise"):
            return
        self._read_bytes = getattr(self, "_read_bytes", 0) + nbytes
        if self._read_bytes >= RELEASE_BYTES:
            mapping.madvise(mmap.MADV_DONTNEED)
            self._read_bytes = 0


class FileCollection(Collection):
    """Image files, decoded one by one into the detector's (C, H, W)."""

    def __init__(self, files: list[Path], root: Path, shape: tuple[int, int, int],
                 labels: np.ndarray | None = None, class_names: tuple[str, ...] | None = None,
                 resize: tuple[int, int] | None = None, grayscale: bool = False) -> None:
        self.files, self.root, self.shape = files, root, tuple(shape)
        self.labels, self.class_names = labels, class_names
        self.resize, self.grayscale = resize, grayscale

    def __len__(self) -> int:
        return len(self.files)

    def ids(self, index: np.ndarray) -> list[str]:
        return [file_id(self.files[i], self.root) for i in index.tolist()]

    def batch(self, index: np.ndarray) -> Batch:
        good, images, bad = [], [], []
        for i in np.asarray(index, dtype=np.int64).tolist():
            try:
                images.append(self.read(i))
                good.append(i)
            except ReconadError as exc:
                bad.append((i, str(exc)))
        c, h, w = self.shape
        x = np.stack(images) if images else np.empty((0, c, h, w), np.float32)
        return Batch(np.asarray(good, dtype=np.int64), x, tuple(bad))

    def read(self, i: int) -> np.ndarray:
        """File ``i`` as float32 (C, H, W) in [0, 1], prepared as the detector's images were."""
        path = self.files[i]
        return fit_image(read_image(path, self.root), str(path), self.shape, self.resize,
                         self.grayscale)


class ParquetCollection(FileCollection):
    """Encoded images (PNG/JPEG bytes) in a Parquet file's ``image`` column, row by row.

    ``image`` holds the bytes, or a struct with a ``bytes`` field (the Hugging Face ``Image``
    feature); an ``id`` column, if any, names the rows (else ``file.parquet[i]``), a ``label``
    column (numbers or names) labels them. Only the row groups a batch needs are read.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int],
                 resize: tuple[int, int] | None = None, grayscale: bool = False) -> None:
        self.path, self.shape, self.resize, self.grayscale = path, tuple(shape), resize, grayscale
        handle = self._handle()
        columns = handle.schema_arrow.names
        if "image" not in columns:
            raise ReconadError(
                f"{path} has columns {columns}; expected the encoded images (PNG/JPEG bytes) in "
                "a column named 'image' (optional: 'id', 'label')"
            )
        extra = handle.read(columns=[c for c in ("id", "label") if c in columns])
        self.row_ids = extra["id"].to_pylist() if "id" in columns else None
        self.labels, self.class_names = None, None
        if "label" in columns:
            self.labels, self.class_names = encode_labels(
                np.asarray(extra["label"].to_pylist()), f"column 'label' of {path}")
        sizes = [handle.metadata.row_group(g).num_rows for g in range(handle.num_row_groups)]
        self.starts = np.cumsum([0, *sizes])  # row group g holds rows starts[g]..starts[g+1]
        self._group: tuple[int, list] | None = None

    def _handle(self):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ReconadError(f"reading {self.path} needs pyarrow; run "
                               'pip install "reconad[ray]" (or pip install pyarrow)') from None
        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise ReconadError(f"{self.path} is not a readable Parquet file "
                               f"({type(exc).__name__}: {exc}); write it again") from None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_group": None}  # the cached row group stays behind

    def __len__(self) -> int:
        return int(self.starts[-1])

    def ids(self, index: np.ndarray) -> list[str]:
        if self.row_ids is not None:
            return [str(self.row_ids[i]) for i in index.tolist()]
        return [f"{self.path.name}[{i}]" for i in index.tolist()]

    def read(self, i: int) -> np.ndarray:
        """Row ``i``'s image as float32 (C, H, W) in [0, 1], prepared like the training images."""
        import io

        group = int(np.searchsorted(self.starts, i, side="right")) - 1
        if self._group is None or self._group[0] != group:
            column = self._handle().read_row_group(group, columns=["image"])["image"]
            self._group = (group, column.to_pylist())
        value = self._group[1][i - self.starts[group]]
        data = value.get("bytes") if isinstance(value, dict) else value
        name = f"row {i} ({self.ids(np.array([i]))[0]}) of {self.path}"
        if not isinstance(data, bytes):
            raise ReconadError(f"{name} holds no image bytes; store encoded PNG/JPEG bytes")
        try:
            image = read_image(io.BytesIO(data), self.path.parent)
        except ReconadError:
            raise ReconadError(f"{name} is not an image Pillow can read; fix or drop that "
                               "row") from None
        return fit_image(image, name, self.shape, self.resize, self.grayscale)


def open_collection(
    source: str | Path,
    shape: tuple[int, int, int],
    resize: tuple[int, int] | None = None,
    grayscale: bool = False,
    label_column: str = "label",
    data_dir: str | Path | None = None,
) -> Collection:
    """The images of a ``reconad score`` input, opened for reading in batches.

    Args:
        source: a folder of images (class sub-folders give labels), a ``.npy`` (memory-mapped),
            an ``.npz``, a ``.parquet`` of encoded images (:class:`ParquetCollection`), a
            ``.csv``, an IDX file, one image file, or a named dataset (``mnist``,
            ``fashion-mnist``, ``kmnist``: its test images, ids ``test:123``).
        shape: the detector's (C, H, W); image files are checked against it one by one.
        resize: (height, width) every image is resized to; None = as stored.
        grayscale: convert colour images to grey.
        label_column: label column of a CSV.
        data_dir: folder of the named datasets.

    Returns:
        The collection; nothing but a file listing (folders) or the stored arrays is read.

    Raises:
        ReconadError: a missing or unreadable input, an empty folder, etc.
    """
    path = Path(source).expanduser()
    options = {"resize": resize, "grayscale": grayscale}
    if path.is_dir():
        files, names = list_image_folder(path)
        labels, class_names = (None, None) if names is None else names_to_indices(names)
        return FileCollection(files, path, shape, labels, class_names, **options)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return FileCollection([path], path.parent, shape, **options)
    if path.is_file() and path.suffix.lower() in (".npy", ".npz"):
        images, name, labels, class_names = read_raw_arrays(path)
        return ArrayCollection(images, name, f"{path.name}[{{}}]", labels, class_names,
                               path=path if path.suffix.lower() == ".npy" else None, **options)
    if path.is_file() and path.suffix.lower() == ".parquet":
        return ParquetCollection(path, shape, **options)
    if path.is_file() and "idx3-ubyte" in path.name:  # MNIST-style IDX images: uint8 kept
        return ArrayCollection(to_nchw(read_idx(path), str(path)), str(path),
                               f"{path.name}[{{}}]", **options)
    if not path.exists():
        if str(source).lower() in SOURCES:
            named = load_named(str(source), data_dir)
            raw = named.test_x  # uint8 (N, 1, H, W), the stored grey levels
            return ArrayCollection(raw, f"{named.name} test images", "test:{}", named.test_y,
                                   SOURCES[str(source).lower()].classes, **options)
        raise ReconadError(f"{path} does not exist and is not a named dataset "
                           f"({', '.join(SOURCES)}); check the path")
    # CSV and anything else: read whole as before (load_user names the problem if any).
    user = load_user(path, label_column=label_column, **options)
    return ArrayCollection(user.x, str(path), f"{path.name}[{{}}]", user.y, user.class_names)


def iter_batches(collection: Collection, batch_size: int = DEFAULT_BATCH,
                 workers: int = 0) -> Iterator[Batch]:
    """The collection's images in order, ``batch_size`` at a time.

    Image files are decoded by ``workers`` processes (:func:`load_ahead`: only decoded
    batches travel between processes); arrays are sliced in this process, where a memory map
    is cheapest to read.
    """
    starts = range(0, len(collection), batch_size)
    spans = [np.arange(s, min(s + batch_size, len(collection)), dtype=np.int64) for s in starts]
    if not isinstance(collection, FileCollection):
        workers = 0
    yield from load_ahead(collection.batch, spans, workers)


def load_ahead(get: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """``get(item)`` for each of ``items``, in order; with ``workers`` >= 1 (and more than one
    item) computed ahead by that many worker processes of a PyTorch ``DataLoader`` (at most
    one per item), whose results travel back as they are (no collation).

    The one way reconad reads ahead: batches of a scored collection (:func:`iter_batches`)
    and of streamed training images (:class:`reconad.train.TrainingImages`).
    """
    if workers < 1 or len(items) < 2:
        yield from (get(item) for item in items)
        return
    from torch.utils.data import DataLoader  # torch only where files are decoded ahead

    loader = DataLoader(_Items(get, items), batch_size=None, shuffle=False,
                        num_workers=min(workers, len(items)), collate_fn=_as_is)
    yield from loader


def _as_is(item: Any) -> Any:
    return item  # keep what get returned (the default collate makes numpy arrays tensors)


class _Items:
    """A map-style dataset whose item ``i`` is ``get(items[i])``."""

    def __init__(self, get: Callable, items: Sequence) -> None:
        self.get, self.items = get, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.get(self.items[i])

"""Loading the configured data: named IDX datasets, defect folders and the user's own files, as
one :class:`Dataset`, subsampled as asked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from reconad.config import DataConfig
from reconad.data._dataset import Dataset
from reconad.data._mvtec import NORMAL_KIND, is_defect_layout, read_defect_dataset
from reconad.data._prepare import prepare
from reconad.data._sampling import stratified_sample
from reconad.data._sources import SOURCES, load_named
from reconad.data._streamed import open_streamed, should_stream
from reconad.data._user import UserImages, load_user
from reconad.errors import ReconadError

TEST_PREFIX = "test/"  # before the ids of a separate data.test_source folder's images


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load the configured data as train and test images, subsampled as asked.

    A named source (``mnist``, ``fashion-mnist``, ``kmnist``) keeps its canonical split. A
    user path gets its test images from ``cfg.test_source``, else from ``x_test`` in its
    ``.npz``, else from a seeded split by ``cfg.test_fraction`` (stratified when labelled).
    ``cfg.max_train``/``cfg.max_test`` then take seeded stratified subsets that keep the
    class proportions and the original order.

    Args:
        cfg: the ``data`` section of the config.
        seed: the run's seed; the same seed gives the same images.

    With ``cfg.stream`` (``true``, or ``auto`` for images that would not fit) a ``.npy`` or a
    folder is not read: the dataset's images are :class:`reconad.data.ImageRows`, read
    batch by batch when training and scoring ask for them.

    Returns:
        The dataset, images ``(N, C, H, W)`` in their stored dtype (see :class:`Dataset`).

    Raises:
        ReconadError: unknown source, unreadable data, train and test of different shapes.

    >>> ds = load_dataset(DataConfig(source="mnist", max_train=600, max_test=100), seed=0)
    ... # doctest: +SKIP
    """
    if cfg.source.lower() not in SOURCES and is_defect_layout(cfg.source):
        if cfg.test_source is not None:
            raise ReconadError(f"data.source {cfg.source} is a defect dataset with its own test "
                               "images; remove data.test_source")
        data = _load_defects(cfg, seed)
    elif cfg.source.lower() in SOURCES:
        should_stream(cfg, None)  # data.stream=true is an error here
        if cfg.test_source is not None:
            raise ReconadError(
                f"data.test_source is for your own data; {cfg.source} has its own test set: "
                "remove data.test_source"
            )
        named = load_named(cfg.source, cfg.data_dir, cfg.download)
        data = Dataset(named.name, prepare(named.train_x, cfg.resize, cfg.grayscale),
                       named.train_y, prepare(named.test_x, cfg.resize, cfg.grayscale),
                       named.test_y, class_names=SOURCES[cfg.source.lower()].classes)
    else:
        data = _load_user_data(cfg, seed)
    return _subsets(data, cfg, seed)


def _load_user_data(cfg: DataConfig, seed: int) -> Dataset:
    """The user's files: test images from ``cfg.test_source``, an ``.npz``'s ``x_test``, or a
    seeded split; file ids relative to each folder read (``test/`` before a test folder's)."""
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise ReconadError(
            f"data.source {cfg.source!r} is neither a named dataset ({', '.join(SOURCES)}) "
            "nor an existing file or folder; check the spelling or the path"
        )
    options = {"resize": cfg.resize, "grayscale": cfg.grayscale,
               "label_column": cfg.label_column}
    stream = should_stream(cfg, path)

    def read(where: str | Path, classes: tuple[str, ...] | None = None) -> UserImages:
        if stream:  # left on disk: ImageRows, read batch by batch
            return open_streamed(Path(where).expanduser(), cfg, classes)
        return load_user(where, classes=classes, **options)

    user = read(path)
    name = path.stem or str(path)
    class_names = user.class_names
    train_ids = test_ids = train_index = test_index = None
    if cfg.test_source is not None:
        test = read(cfg.test_source, user.class_names)
        train_x, train_y, test_x, test_y = user.x, user.y, test.x, test.y
        class_names = test.class_names or class_names  # the training names come first
        train_ids = user.ids
        test_ids = None if test.ids is None else np.char.add(TEST_PREFIX, test.ids)
        _check_distinct(train_ids, test_ids, cfg)
    elif user.x_test is not None:
        train_x, train_y, test_x, test_y = user.x, user.y, user.x_test, user.y_test
    else:
        train_idx, test_idx = split_indices(user.y, len(user.x), cfg.test_fraction, seed)
        train_x, test_x = user.x[train_idx], user.x[test_idx]
        train_y, test_y = _pick(user.y, train_idx), _pick(user.y, test_idx)
        train_ids, test_ids = _pick(user.ids, train_idx), _pick(user.ids, test_idx)
        train_index, test_index = train_idx, test_idx  # positions in the source file
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ReconadError(
            f"training images are {_shape(train_x)} but test images are {_shape(test_x)} "
            "(CxHxW); set data.resize and/or data.grayscale so they match"
        )
    return Dataset(name, train_x, train_y, test_x, test_y, train_index, test_index,
                   class_names=class_names, train_ids=train_ids, test_ids=test_ids)


def _subsets(data: Dataset, cfg: DataConfig, seed: int) -> Dataset:
    """``data`` cut to ``cfg.max_train``/``cfg.max_test`` images (seeded, stratified, in the
    original order), every per-image array with its images, and the positions kept."""
    train_index = (np.arange(len(data.train_x)) if data.train_index is None
                   else data.train_index)
    test_index = np.arange(len(data.test_x)) if data.test_index is None else data.test_index
    changes: dict = {"train_index": train_index, "test_index": test_index}
    if cfg.max_train is not None and cfg.max_train < len(data.train_x):
        keep = stratified_sample(len(data.train_x), data.train_y, cfg.max_train, seed=[seed, 1])
        changes.update(train_x=data.train_x[keep], train_y=_pick(data.train_y, keep),
                       train_ids=_pick(data.train_ids, keep), train_index=train_index[keep])
    if cfg.max_test is not None and cfg.max_test < len(data.test_x):
        keep = stratified_sample(len(data.test_x), data.test_y, cfg.max_test, seed=[seed, 2])
        changes.update(test_x=data.test_x[keep], test_y=_pick(data.test_y, keep),
                       test_ids=_pick(data.test_ids, keep), masks=_pick(data.masks, keep),
                       test_index=test_index[keep])
    return replace(data, **changes)


def _pick(values: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """``values[keep]``, or None for a per-image array the data does not have."""
    return None if values is None else values[keep]


def _check_distinct(train_ids: np.ndarray | None, test_ids: np.ndarray | None,
                    cfg: DataConfig) -> None:
    """Train and test ids name different images (scores are kept by id)."""
    if train_ids is None or test_ids is None:
        return
    shared = np.intersect1d(train_ids, test_ids)
    if len(shared):
        raise ReconadError(
            f"data.source {cfg.source} has a class folder {TEST_PREFIX}, so its image "
            f"{shared[0]} has the id of a data.test_source image (test/ + the path in "
            f"{cfg.test_source}); rename that class folder"
        )


def _load_defects(cfg: DataConfig, seed: int) -> Dataset:
    """A defect dataset folder (:mod:`reconad.data`) with its test masks and file ids.
    Class 0 is ``good``, then the defect kinds, sorted. The MVTec AD layout keeps its own
    split; the plain layout's good images are split by ``cfg.test_fraction`` and every
    defective image is a test image."""
    data = read_defect_dataset(cfg.source, cfg.resize, cfg.grayscale)
    class_names = (NORMAL_KIND, *sorted(set(data.kinds.tolist()) - {NORMAL_KIND}))
    labels = np.array([class_names.index(k) for k in data.kinds.tolist()], dtype=np.int64)
    train = data.train.copy()
    if not train.any():  # plain layout: hold out test_fraction of the good images
        good = np.flatnonzero(labels == 0)
        if len(good) < 2:
            raise ReconadError(f"{cfg.source} has {len(good)} good image(s); a defect dataset "
                               "needs good images to train on")
        kept, _ = split_indices(None, len(good), cfg.test_fraction, seed)
        train[good[kept]] = True
    x = data.float_images()
    name = Path(cfg.source).expanduser().resolve().name
    return Dataset(name, x[train], labels[train], x[~train], labels[~train],
                   class_names=class_names, masks=data.masks[~train],
                   train_ids=data.ids[train], test_ids=data.ids[~train])


def split_indices(
    labels: np.ndarray | None, n_total: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split, stratified when labelled; both index arrays sorted.

    Returns:
        ``(train indices, test indices)``; the test part has ``round(n_total * test_fraction)``
        items, at least 1, and the train part at least 1.
    """
    if n_total < 2:
        raise ReconadError(
            f"cannot split {n_total} image(s) into train and test; give more images or "
            "data.test_source"
        )
    n_test = min(max(round(n_total * test_fraction), 1), n_total - 1)
    test = stratified_sample(n_total, labels, n_test, seed=[seed, 0])
    train = np.setdiff1d(np.arange(n_total), test)
    return train.astype(np.int64), test


def _shape(images: np.ndarray) -> str:
    return "x".join(str(s) for s in images.shape[1:])

"""Who is normal, and which images form the training, validation and evaluated sets.

Four scenarios (``scenario.kind``), each a pure, seeded function of the dataset and the config:

- ``holdout``: some classes are normal; the test images of ``dev_anomaly`` classes are the
  development anomalies and those of ``eval_anomaly`` the evaluation anomalies.
- ``one-class``: ``normal`` classes only are normal; every other class is anomalous. The
  development anomalies come from the TRAINING images, so thresholds never touch the test set.
- ``corruption``: clean images are normal, corrupted copies of some of them are anomalies.
- ``contamination``: the model trains on an unlabelled pool with a few planted images of the
  ``contaminant`` classes; the development set is that pool with the planted images marked.

Every evaluated set lists its normals first, then its anomalies class by class, each part in
the original image order, grouped by class name where the data has names (``blowhole``) and
``class 8`` otherwise. ``ids`` name each image: its file's path where it comes from a file
(``"test/blowhole/001.png"``, ``"good/0001.png"``), else its position in the source
(``"test:123"``, ``"train:57"``); a corrupted copy adds its noise (``"test:123+gaussian"``).
Each random draw has its own seeded stream, so changing one fraction does not reshuffle the
other draws.

>>> import numpy as np
>>> from reconad.config import ScenarioConfig
>>> from reconad.data import Dataset
>>> y = np.arange(100) % 4
>>> data = Dataset("toy", np.zeros((100, 1, 2, 2), np.float32), y,
...                np.zeros((100, 1, 2, 2), np.float32), y)
>>> make_splits(data, ScenarioConfig(dev_anomaly=[2], eval_anomaly=[3]), seed=0).sizes()
{'train': 45, 'val': 5, 'dev': {'normal': 50, 'class 2': 25}, 'eval': {'normal': 50, 'class 3': 25}}
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from reconad.config import ScenarioConfig
from reconad.data import NORMAL_KIND, Dataset, float_batch, stratified_sample
from reconad.errors import ReconadError
from reconad.scenarios._sets import (
    EvalSet,
    Splits,
    class_sets,
    concat_sets,
    ids_of,
    label_of,
    make_set,
    normal_set,
)
from reconad.transforms import corrupt


def make_splits(dataset: Dataset, cfg: ScenarioConfig, seed: int) -> Splits:
    """Build the training/validation images and the evaluated sets of a scenario.

    Args:
        dataset: the loaded images and labels (labels may be None only for ``corruption``).
        cfg: the ``scenario`` config section; ``cfg.kind`` picks the scenario.
        seed: seeds every random draw (same seed, same splits).

    Returns:
        The :class:`Splits`; ``splits.sizes()`` gives every group's size.

    Raises:
        ReconadError: labels missing for a scenario that needs them, a class selection that
            leaves the normal or an anomaly group empty, or a fraction leaving a part empty.
    """
    if (cfg.kind == "one-class" and cfg.normal == [NORMAL_KIND] and dataset.train_y is None
            and dataset.test_y is None):  # a folder of normal images: all of them are good
        splits = _all_normal(dataset, cfg, seed)
    else:
        cfg = resolve_class_names(cfg, dataset)
        splits = _SCENARIOS[cfg.kind](dataset, cfg, seed)
    if dataset.masks is not None:
        splits = replace(splits, sets={name: replace(s, masks=_masks_of(s.ids, dataset))
                                       for name, s in splits.sets.items()})
    sets = {name: replace(s, ids=_source_ids(s.ids, dataset)) for name, s in splits.sets.items()}
    return replace(splits, sets=sets)


_CLASS_FIELDS = ("normal", "dev_anomaly", "eval_anomaly", "contaminant")


def resolve_class_names(cfg: ScenarioConfig, dataset: Dataset) -> ScenarioConfig:
    """``cfg`` with every class given by name (``normal: [good]``) replaced by its number.

    Numbers stay as they are; a name is looked up in ``dataset.class_names`` (folder names,
    text labels, a named dataset's classes such as ``Trouser``).

    Raises:
        ReconadError: an unknown name (the message lists the known ones), names for data whose
            labels are plain numbers, or a class that ends up both normal and anomalous.
    """
    names = dataset.class_names
    resolved: dict[str, list[int] | None] = {}
    for field in _CLASS_FIELDS:
        values = getattr(cfg, field)
        if values is None or all(isinstance(v, int) for v in values):
            continue
        numbers = []
        for value in values:
            if isinstance(value, int):
                numbers.append(value)
            elif names is not None and value in names:
                numbers.append(names.index(value))
            elif names is None and value.strip().lstrip("-").isdigit():
                numbers.append(int(value))  # "3" written as text, for data without names
            elif names is None:
                raise ReconadError(
                    f"scenario.{field} names class {value!r} but the {dataset.name} data has no "
                    "class names (its labels are numbers); give class numbers, e.g. [0]"
                )
            else:
                raise ReconadError(
                    f"scenario.{field} names class {value!r}, which the {dataset.name} data does "
                    f"not have; known classes: {', '.join(names)} (or their numbers 0.."
                    f"{len(names) - 1})"
                )
        if len(set(numbers)) != len(numbers):
            raise ReconadError(f"scenario.{field} lists a class twice: {values}")
        resolved[field] = numbers
    if not resolved:
        return cfg
    cfg = cfg.model_copy(update=resolved)
    if cfg.normal is not None:
        anomalies = {"holdout": set(cfg.dev_anomaly) | set(cfg.eval_anomaly),
                     "contamination": set(cfg.contaminant)}.get(cfg.kind, set())
        both = sorted(set(cfg.normal) & anomalies)
        if both:
            raise ReconadError(f"classes {both} are both normal and anomalous; check "
                               "scenario.normal and the anomaly classes")
    return cfg


def _masks_of(ids: np.ndarray, dataset: Dataset) -> np.ndarray:
    """The defect masks (N, H, W) of the images ``ids`` ("test:12", "train:3", "...+noise")
    name: the test image's own mask, none for a training image, all pixels for a copy."""
    masks = np.zeros((len(ids), *dataset.image_shape[1:]), dtype=bool)
    for i, image_id in enumerate(ids.tolist()):
        origin, _, rest = image_id.partition(":")
        number, plus, _ = rest.partition("+")
        if plus:
            masks[i] = True
        elif origin == "test":
            masks[i] = dataset.masks[int(number)]
    return masks


def _source_ids(ids: np.ndarray, dataset: Dataset) -> np.ndarray:
    """The ids users read: "test:12+noise" (12 = position among the dataset's test images)
    becomes the image file's id where the images come from files ("test/good/x.png+noise"),
    else the position in the source file, not in a subset ("test:57+noise")."""
    files = {"train": dataset.train_ids, "test": dataset.test_ids}
    index = {"train": dataset.train_index, "test": dataset.test_index}
    out = []
    for image_id in ids.tolist():
        origin, _, rest = image_id.partition(":")
        number, plus, suffix = rest.partition("+")
        if files.get(origin) is not None:
            name = str(files[origin][int(number)])
        elif index.get(origin) is not None:
            name = f"{origin}:{index[origin][int(number)]}"
        else:
            name = f"{origin}:{number}"
        out.append(f"{name}{plus}{suffix}")
    return np.asarray(out)


# --------------------------------------------------------------------------- scenarios


def _holdout(data: Dataset, cfg: ScenarioConfig, seed: int) -> Splits:
    train_y, test_y = _labels(data, cfg.kind)
    present = _present(train_y, test_y)
    anomalous = set(cfg.dev_anomaly) | set(cfg.eval_anomaly)
    normal = cfg.normal if cfg.normal is not None else [c for c in present if c not in anomalous]
    if not normal:
        raise ReconadError(
            f"no normal class left: every class {present} is named in scenario.dev_anomaly or "
            "scenario.eval_anomaly; name fewer anomaly classes or set scenario.normal"
        )
    _check_classes("normal", normal, train_y, "training")
    _check_classes("dev_anomaly", cfg.dev_anomaly, test_y, "test")
    _check_classes("eval_anomaly", cfg.eval_anomaly, test_y, "test")

    normal_train = _where(train_y, normal)
    train_idx, val_idx = _split_off(normal_train, train_y, cfg.val_fraction, _rng(seed, "val"),
                                    "scenario.val_fraction", "normal training images")
    normal_test = _where(test_y, normal)
    if not len(normal_test):
        raise ReconadError(f"the normal classes {normal} have no test images; set "
                           "scenario.normal to classes that appear in the test data")

    def anomalies(classes: list[int]) -> EvalSet:
        return class_sets(data.test_x, test_y, _where(test_y, classes), "test",
                          data.class_names, order=classes)

    dev_normal = final_normal = normal_test
    if cfg.split_final:
        dev_normal, final_normal = _split_off(
            normal_test, test_y, cfg.final_fraction, _rng(seed, "final"),
            "scenario.final_fraction", "normal test images")
    dev_normals = normal_set(data.test_x, test_y, dev_normal, "test")
    sets = {
        "dev": concat_sets(dev_normals, anomalies(cfg.dev_anomaly)),
        "eval": concat_sets(dev_normals, anomalies(cfg.eval_anomaly)),
    }
    if cfg.split_final:
        sets["final"] = concat_sets(normal_set(data.test_x, test_y, final_normal, "test"),
                                anomalies(cfg.eval_anomaly))
    return Splits(data.train_x[train_idx], data.train_x[val_idx], sets, "normal",
                  train_y[train_idx].astype(np.int64))


def _one_class(data: Dataset, cfg: ScenarioConfig, seed: int) -> Splits:
    if cfg.normal is None:
        raise ReconadError("scenario.normal must list the normal class(es) for one-class, "
                           "e.g. --set scenario.normal=[0]")
    train_y, test_y = _labels(data, cfg.kind)
    present = _present(train_y, test_y)
    others = [c for c in present if c not in cfg.normal]
    if not others:
        raise ReconadError(f"every class {present} is in scenario.normal, so there are no "
                           "anomalies; leave at least one class out of scenario.normal")
    _check_classes("normal", cfg.normal, train_y, "training")

    train_idx, val_idx = _split_off(_where(train_y, cfg.normal), train_y, cfg.val_fraction,
                                    _rng(seed, "val"), "scenario.val_fraction",
                                    "normal training images")
    # Development anomalies: other classes' TRAINING images, so the test set stays untouched.
    # A defect dataset (MVTec AD) trains on good images only: its dev set is the validation
    # normals alone, and only the quantile threshold can be computed.
    dev = normal_set(data.train_x, train_y, val_idx, "train")
    if data.masks is None or len(_where(train_y, others)):
        picked = _draw_share(_where(train_y, others), train_y, "scenario.dev_anomaly_fraction",
                             cfg.dev_anomaly_fraction, len(val_idx),
                             _rng(seed, "dev anomalies"),
                             "training images of the other classes (development anomalies)")
        dev = concat_sets(dev, class_sets(data.train_x, train_y, picked, "train",
                                          data.class_names))

    test_normal, test_other = _where(test_y, cfg.normal), _where(test_y, others)
    if not len(test_normal) or not len(test_other):
        which = "normal" if not len(test_normal) else "anomalous"
        raise ReconadError(f"the test data has no {which} images for scenario.normal="
                           f"{cfg.normal}; check the labels of the test data")
    evaluation = concat_sets(normal_set(data.test_x, test_y, test_normal, "test"),
                             class_sets(data.test_x, test_y, test_other, "test",
                                        data.class_names))
    return Splits(data.train_x[train_idx], data.train_x[val_idx],
                  {"dev": dev, "eval": evaluation}, "normal", train_y[train_idx].astype(np.int64))


def _all_normal(data: Dataset, cfg: ScenarioConfig, seed: int) -> Splits:
    """one-class with ``normal: [good]`` on images without classes (a folder of normal
    images, as the ``defects`` preset reads one): every image is normal; the sets hold the
    validation and test normals alone, so only the quantile threshold can be computed and no
    AUROC."""
    train_idx, val_idx = _split_off(np.arange(len(data.train_x)), None, cfg.val_fraction,
                                    _rng(seed, "val"), "scenario.val_fraction",
                                    "normal training images")
    test_idx = np.arange(len(data.test_x))
    sets = {"dev": normal_set(data.train_x, None, val_idx, "train"),
            "eval": normal_set(data.test_x, None, test_idx, "test")}
    return Splits(data.train_x[train_idx], data.train_x[val_idx], sets, "normal", None)


def _corruption(data: Dataset, cfg: ScenarioConfig, seed: int) -> Splits:
    train_y, test_y = data.train_y, data.test_y
    if cfg.normal is not None:
        train_y, test_y = _labels(data, "corruption with scenario.normal")
        _check_classes("normal", cfg.normal, train_y, "training")
        _check_classes("normal", cfg.normal, test_y, "test")
        train_pool, test_pool = _where(train_y, cfg.normal), _where(test_y, cfg.normal)
    else:
        train_pool, test_pool = np.arange(len(data.train_x)), np.arange(len(data.test_x))
    what = "normal training images" if cfg.normal is not None else "training images"
    train_idx, val_idx = _split_off(train_pool, train_y, cfg.val_fraction, _rng(seed, "val"),
                                    "scenario.val_fraction", what)

    def with_copies(x: np.ndarray, y: np.ndarray | None, idx: np.ndarray, origin: str,
                    fraction: float, stream: str) -> EvalSet:
        """The clean images ``idx`` plus corrupted copies of a seeded fraction of them."""
        count = _count(fraction, len(idx))
        picked = stratified_sample(idx, y, count, _rng(seed, stream))
        noisy = _corrupt(x[picked], cfg.noise, cfg.noise_level, _rng(seed, stream + " noise"))
        copies = make_set(noisy, True, f"{cfg.noise} {cfg.noise_level:g}",
                           label_of(y, picked), np.char.add(ids_of(origin, picked),
                                                             f"+{cfg.noise}"))
        return concat_sets(normal_set(x, y, idx, origin), copies)

    sets = {
        "dev": with_copies(data.train_x, train_y, val_idx, "train", cfg.dev_anomaly_fraction,
                           "dev anomalies"),
        "eval": with_copies(data.test_x, test_y, test_pool, "test", cfg.corrupt_fraction,
                            "eval anomalies"),
    }
    return Splits(data.train_x[train_idx], data.train_x[val_idx], sets, "normal",
                  None if train_y is None else train_y[train_idx].astype(np.int64))


def _contamination(data: Dataset, cfg: ScenarioConfig, seed: int) -> Splits:
    train_y, test_y = _labels(data, cfg.kind)
    present = _present(train_y, test_y)
    normal = cfg.normal if cfg.normal is not None else [
        c for c in present if c not in cfg.contaminant]
    if not normal:
        raise ReconadError(f"no normal class left: every class {present} is in "
                           "scenario.contaminant; set scenario.normal, e.g. [1]")
    _check_classes("normal", normal, train_y, "training")
    _check_classes("normal", normal, test_y, "test")
    _check_classes("contaminant", cfg.contaminant, train_y, "training")
    _check_classes("contaminant", cfg.contaminant, test_y, "test")

    def plant(y: np.ndarray, normal_idx: np.ndarray, stream: str, where: str) -> np.ndarray:
        """A seeded sample of contaminant images, ``contamination`` x the normal count."""
        return _draw_share(_where(y, cfg.contaminant), y, "scenario.contamination",
                           cfg.contamination, len(normal_idx), _rng(seed, stream),
                           f"{where} images of classes {cfg.contaminant}")

    normal_train = _where(train_y, normal)
    planted = plant(train_y, normal_train, "planted", "training")
    # The model never sees the hidden labels: the validation images are a plain random draw.
    pool = np.sort(np.concatenate([normal_train, planted]))
    train_idx, val_idx = _split_off(pool, None, cfg.val_fraction, _rng(seed, "val"),
                                    "scenario.val_fraction", "images in the training pool")
    normal_test = _where(test_y, normal)
    sets = {
        "dev": concat_sets(normal_set(data.train_x, train_y, normal_train, "train"),
                           class_sets(data.train_x, train_y, planted, "train",
                                      data.class_names, "planted ", order=cfg.contaminant)),
        "eval": concat_sets(normal_set(data.test_x, test_y, normal_test, "test"),
                            class_sets(data.test_x, test_y,
                                       plant(test_y, normal_test, "eval anomalies", "test"),
                                       "test", data.class_names, order=cfg.contaminant)),
    }
    return Splits(data.train_x[train_idx], data.train_x[val_idx], sets, "unlabelled pool",
                  dev_is_pool=True)


_SCENARIOS: dict[str, Callable[[Dataset, ScenarioConfig, int], Splits]] = {
    "holdout": _holdout,
    "one-class": _one_class,
    "corruption": _corruption,
    "contamination": _contamination,
}


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per purpose, stable across runs and Python versions."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def _labels(data: Dataset, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if data.train_y is None or data.test_y is None:
        raise ReconadError(
            f"scenario.kind={kind} needs class labels but the {data.name} data has none; use "
            "scenario.kind=corruption (without scenario.normal) or give labelled data "
            "(class sub-folders, a label column)"
        )
    return np.asarray(data.train_y), np.asarray(data.test_y)


def _present(*labels: np.ndarray) -> list[int]:
    return sorted(int(c) for c in np.unique(np.concatenate(labels)))


def _check_classes(field: str, classes: Sequence[int], labels: np.ndarray, where: str) -> None:
    present = set(np.unique(labels).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise ReconadError(
            f"scenario.{field} lists class(es) {missing} with no {where} images (classes "
            f"present: {sorted(present)}); pick classes from those"
        )


def _where(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Indices (ascending) of the images whose label is in ``classes``."""
    return np.flatnonzero(np.isin(labels, list(classes)))


def _count(fraction: float, n: int) -> int:
    """round(fraction x n), half up, at least 1: an anomaly group is never empty."""
    return max(1, int(fraction * n + 0.5))


def _draw_share(pool: np.ndarray, labels: np.ndarray, key: str, fraction: float, n: int,
                rng: np.random.Generator, what: str) -> np.ndarray:
    """A stratified sample of round(fraction x n) images of ``pool``; raises when it is short."""
    count = _count(fraction, n)
    if count > len(pool):
        raise ReconadError(f"{key}={fraction} needs {count} {what} but there are {len(pool)}; "
                           f"lower {key}")
    return stratified_sample(pool, labels, count, rng)


def _split_off(idx: np.ndarray, labels: np.ndarray | None, fraction: float,
               rng: np.random.Generator, key: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (kept, held out), holding out round(fraction x n) stratified images."""
    n = len(idx)
    count = int(fraction * n + 0.5)
    if count == 0 or count == n:
        empty = "held-out" if count == 0 else "remaining"
        raise ReconadError(
            f"{key}={fraction} of {n} {what} leaves no {empty} images; use more images or "
            f"{'raise' if count == 0 else 'lower'} {key}"
        )
    held = stratified_sample(idx, labels, count, rng)
    return np.setdiff1d(idx, held), held


def _corrupt(x: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    # Only the corrupted subset becomes float32; the clean images keep their stored dtype.
    return np.asarray(corrupt(float_batch(np.asarray(x)), kind, level, rng), dtype=np.float32)

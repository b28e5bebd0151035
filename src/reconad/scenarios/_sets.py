"""What a scenario hands on: the evaluated sets and the splits, and how sets are built.

An :class:`EvalSet` is one judged set of images (normals first, then anomalies class by class)
with each image's anomaly flag, group, original label, id and optional defect mask;
:class:`Splits` holds the training/validation images and every evaluated set. The builders
below keep images in their stored dtype (uint8 stays uint8; a view of a file stays a view).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reconad.data import ImageRows, float_batch


@dataclass(frozen=True, eq=False)
class EvalSet:
    """One evaluated set of images with their ground truth.

    Attributes:
        x: (N, C, H, W) images in their stored dtype (uint8 grey levels, float32 in [0, 1]
            for corrupted copies), or :class:`reconad.data.ImageRows` read from disk.
        is_anomaly: (N,) bool.
        group: (N,) str: "normal", "class 8", "blowhole" (a named class, see
            :func:`class_group`), "gaussian 0.2", "planted class 3", ...
        label: (N,) int64 original class, -1 when unknown.
        ids: (N,) str stable image ids: a file's path ("test/blowhole/001.png",
            "good/0001.png") or a position in the source ("test:123", "train:57"); a
            corrupted copy adds its noise ("test:123+gaussian").
        masks: (N, H, W) bool defect pixels when the data has masks (a defect dataset), else
            None. Normal images have empty masks, a corrupted copy a full one.
    """

    x: np.ndarray
    is_anomaly: np.ndarray
    group: np.ndarray
    label: np.ndarray
    ids: np.ndarray
    masks: np.ndarray | None = None

    def sizes(self) -> dict[str, int]:
        """Number of images in each group, in order of first appearance."""
        names, first, counts = np.unique(self.group, return_index=True, return_counts=True)
        order = np.argsort(first)
        return {str(names[i]): int(counts[i]) for i in order}


@dataclass(frozen=True, eq=False)
class Splits:
    """Everything a scenario decides: what the model is fitted on and what it is judged on.

    Attributes:
        train: (N, C, H, W) images the model is fitted on.
        val: (M, C, H, W) held-out training images (early stopping, quantile threshold).
        sets: evaluated sets: "dev" and "eval" always, "final" in holdout with split_final.
        train_group: what the training images are, e.g. "normal" or "unlabelled pool".
        train_labels: (N,) int64 class of each training image where the scenario may use it
            (the normal classes of holdout and one-class), else None (an unlabelled pool).
        dev_is_pool: the dev set is the unlabelled training pool itself (contamination).
    """

    train: np.ndarray
    val: np.ndarray
    sets: dict[str, EvalSet]
    train_group: str
    train_labels: np.ndarray | None = None
    dev_is_pool: bool = False

    def quantile_reference(self, dev_scores: np.ndarray, val_scores: np.ndarray) -> np.ndarray:
        """The scores the label-free ``quantile`` threshold is taken over.

        The normal validation images' scores; but where the dev set is the unlabelled pool
        (contamination) all of its scores, labels unused: protocol 4 flags "the images above a
        high quantile of the scores", and the pool holds far more images than its validation
        part, so a 99 % quantile rests on ~70 images instead of ~7.
        """
        return dev_scores if self.dev_is_pool else val_scores

    def sizes(self) -> dict:
        """``{"train": n, "val": n, "dev": {"normal": n, "class 8": n}, "eval": {...}}``."""
        out: dict = {"train": int(len(self.train)), "val": int(len(self.val))}
        out.update({name: s.sizes() for name, s in self.sets.items()})
        return out


def ids_of(origin: str, idx: np.ndarray) -> np.ndarray:
    """Ids ``"origin:i"`` naming the images ``idx`` of the dataset's ``origin`` images
    (``train`` or ``test``); :func:`reconad.scenarios.make_splits` turns them into the
    images' file paths or source positions once the sets are built."""
    return np.char.add(f"{origin}:", idx.astype(str))


def class_group(label: int, names: Sequence[str] | None) -> str:
    """The group name of the images of class ``label``: the class's name where the data's
    classes have names (``blowhole``, ``Trouser``), else ``class 8``. A name that is a number
    (MNIST's ``8``, a folder named ``3``) reads ``class 8`` too, and so does a class named
    ``normal``, which would otherwise pass for the normal group.

    >>> class_group(1, ("good", "blowhole")), class_group(8, tuple("0123456789"))
    ('blowhole', 'class 8')
    >>> class_group(3, None)
    'class 3'
    """
    name = names[label] if names is not None and 0 <= label < len(names) else str(label)
    if name.strip().lstrip("-").isdigit() or not name.strip() or name == "normal":
        return f"class {name}"
    return name


def label_of(labels: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    if labels is None:
        return np.full(len(idx), -1, dtype=np.int64)
    return labels[idx].astype(np.int64)


def make_set(x: np.ndarray, anomaly: bool, group: str | np.ndarray, label: np.ndarray,
              ids: np.ndarray) -> EvalSet:
    n = len(x)
    return EvalSet(
        x=x if isinstance(x, ImageRows) else np.asarray(x),  # stored dtype, no float copy
        is_anomaly=np.full(n, anomaly, dtype=bool),
        group=np.broadcast_to(np.asarray(group, dtype=str), (n,)).copy(),
        label=label,
        ids=ids,
    )


def normal_set(x: np.ndarray, labels: np.ndarray | None, idx: np.ndarray, origin: str) -> EvalSet:
    return make_set(x[idx], False, "normal", label_of(labels, idx), ids_of(origin, idx))


def class_sets(x: np.ndarray, labels: np.ndarray, idx: np.ndarray, origin: str,
               names: Sequence[str] | None, prefix: str = "",
               order: Sequence[int] | None = None) -> EvalSet:
    """Anomalies ``idx`` class by class (in ``order`` if given), each class grouped
    ``prefix`` + :func:`class_group` (``class 8``, ``blowhole``, ``planted class 3``)."""
    y = labels[idx]
    classes = list(order) if order is not None else sorted(np.unique(y).tolist())
    idx = np.concatenate([idx[y == c] for c in classes])  # class by class, original order
    groups = {c: prefix + class_group(c, names) for c in classes}
    return make_set(x[idx], True, np.array([groups[c] for c in labels[idx].tolist()]),
                    label_of(labels, idx), ids_of(origin, idx))


def concat_sets(*parts: EvalSet) -> EvalSet:
    masks = None if any(p.masks is None for p in parts) else np.concatenate(
        [p.masks for p in parts])
    return EvalSet(join_images([p.x for p in parts]),
                   *(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("is_anomaly", "group", "label", "ids")), masks)


def join_images(parts: list) -> np.ndarray | ImageRows:
    """Images one after another: views of one source stay a view, arrays of one dtype stay
    that dtype; a mix (clean uint8 beside corrupted float32 copies) becomes float32."""
    if all(isinstance(p, ImageRows) for p in parts) and len({id(p.source) for p in parts}) == 1:
        return parts[0].concat(*parts[1:])
    arrays = [np.asarray(p) for p in parts]
    if len({a.dtype for a in arrays}) > 1:
        arrays = [float_batch(a) for a in arrays]
    return np.concatenate(arrays)

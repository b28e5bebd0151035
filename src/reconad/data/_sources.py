"""Named datasets in the MNIST IDX layout: where to find them, and how to download them.

Lookup order for dataset ``name``: the configured data dir (``--data-dir``), then
``$RECONAD_DATA``, then the user cache ``$XDG_CACHE_HOME/reconad`` (or ``~/.cache/reconad``).
In each of these folders D the four files may lie in ``D/<name>/`` or directly in ``D``, as
``.gz`` or unzipped. Files found locally are checked against the known md5 sums too, so that
another dataset's files (or a corrupt copy) are never read under the wrong name.

>>> ds = load_named("mnist", data_dir="../shared/data")  # doctest: +SKIP
>>> ds.train_x.shape, ds.test_y[:3]  # doctest: +SKIP
((60000, 1, 28, 28), array([7, 2, 1]))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reconad.data._dataset import Dataset
from reconad.data._download import MirrorsUnreachable, download
from reconad.data._idx import is_gzip, parse_idx, read_idx_bytes
from reconad.errors import ReconadError

ENV_VAR = "RECONAD_DATA"


@dataclass(frozen=True)
class IdxFile:
    """One of a dataset's four files and its known md5 sums (None = not published)."""

    name: str
    """File name without ``.gz``, e.g. ``train-images-idx3-ubyte``."""
    md5_content: str | None
    """md5 of the decompressed content: holds for a download from any mirror."""
    md5_gz: str | None
    """md5 of the mirrors' ``.gz`` bytes."""

    @property
    def gz_name(self) -> str:
        """The name on the mirrors."""
        return self.name + ".gz"

    @property
    def md5s(self) -> tuple[str, ...]:
        """Every accepted sum."""
        return tuple(m for m in (self.md5_content, self.md5_gz) if m)


@dataclass(frozen=True)
class NamedSource:
    """A dataset in the MNIST layout: mirrors and the four files (train/test images/labels)."""

    name: str
    mirrors: tuple[str, ...]
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    classes: tuple[str, ...]

    @property
    def files(self) -> tuple[IdxFile, IdxFile, IdxFile, IdxFile]:
        """The four files in a fixed order."""
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


def _files(md5_content: Sequence[str | None], md5_gz: Sequence[str]) -> tuple[IdxFile, ...]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(IdxFile(n, c, g) for n, c, g in zip(names, md5_content, md5_gz, strict=True))


# MNIST: decompressed md5s from ../shared/data/mnist/MD5SUMS; .gz md5s as published with
# the files on the mirrors (listed in ../shared/data/mnist/README.md and in torchvision's
# datasets/mnist.py).
_MNIST = _files(
    ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
     "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"),
    ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
     "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
)
# Fashion-MNIST: .gz md5s from the table in zalandoresearch/fashion-mnist's README (the same
# values are in torchvision's datasets/mnist.py); no decompressed md5 is published.
_FASHION = _files(
    (None, None, None, None),
    ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
     "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
)
# KMNIST: .gz md5s from torchvision's datasets/mnist.py (class KMNIST); the files live under
# /kmnist/dataset/kmnist/ on CODH's server (rois-codh/kmnist download_data.py).
_KMNIST = _files(
    (None, None, None, None),
    ("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
     "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
)

SOURCES: dict[str, NamedSource] = {
    "mnist": NamedSource(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        *_MNIST,
        classes=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": NamedSource(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        *_FASHION,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    ),
    "kmnist": NamedSource(
        "kmnist",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        *_KMNIST,
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}


def get_source(name: str) -> NamedSource:
    """The named dataset, or an error listing the known names."""
    try:
        return SOURCES[name.lower()]
    except KeyError:
        raise ReconadError(
            f"unknown dataset {name!r}; use one of {', '.join(SOURCES)} or a path to your images"
        ) from None


def cache_dir() -> Path:
    """The user cache folder for datasets: ``$XDG_CACHE_HOME/reconad`` or ``~/.cache/reconad``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "reconad"


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The base folders searched, in order: data_dir, $RECONAD_DATA, the user cache."""
    bases = [data_dir, os.environ.get(ENV_VAR) or None, cache_dir()]
    return [Path(b).expanduser() for b in bases if b is not None]


def download_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Where a missing dataset is downloaded: ``<first search dir>/<name>``."""
    return search_dirs(data_dir)[0] / get_source(name).name


def _find_file(folder: Path, f: IdxFile) -> Path | None:
    """``folder/<name>.gz`` or else ``folder/<name>`` if it exists."""
    for candidate in (folder / f.gz_name, folder / f.name):
        if candidate.is_file():
            return candidate
    return None


def _find_in(folder: Path, source: NamedSource) -> list[Path] | None:
    """The four files in ``folder``, or None if any is missing."""
    found = [_find_file(folder, f) for f in source.files]
    return None if None in found else found  # type: ignore[return-value]


def find_files(name: str, data_dir: str | Path | None = None) -> list[Path] | None:
    """Paths of the four files of ``name`` in the first folder holding all of them, or None.

    Args:
        name: ``mnist``, ``fashion-mnist`` or ``kmnist``.
        data_dir: the configured data folder (CLI ``--data-dir``); None = not set.

    Returns:
        Train images, train labels, test images, test labels; None when no folder has all four.
    """
    source = get_source(name)
    for base in search_dirs(data_dir):
        # D/<name>/ first: files directly in D may belong to another dataset.
        for folder in (base / source.name, base):
            found = _find_in(folder, source)
            if found is not None:
                return found
    return None


def _missing_message(source: NamedSource, target: Path, reason: str) -> str:
    names = ", ".join(f.gz_name for f in source.files)
    return (
        f"{source.name} not found and {reason}: put {names} (.gz or unzipped) in {target}, or "
        f"point --data-dir (or the environment variable {ENV_VAR}) at the folder holding them"
    )


def ensure_files(
    name: str,
    data_dir: str | Path | None = None,
    download_missing: bool = True,
    mirrors: Sequence[str] | None = None,
    progress: bool | None = None,
) -> list[Path]:
    """Find the four files of ``name`` locally, downloading the missing ones if allowed.

    Args:
        name: ``mnist``, ``fashion-mnist`` or ``kmnist``.
        data_dir: the configured data folder; None = $RECONAD_DATA, then the user cache.
        download_missing: download files not found locally (else raise).
        mirrors: base URLs replacing the dataset's mirrors (for tests and private mirrors).
        progress: progress bar on stderr; None = only when stderr is a terminal.

    Returns:
        Train images, train labels, test images, test labels.

    Raises:
        ReconadError: not found and not downloadable (one line naming the files and the folder),
            or a download that fails its checksum.
    """
    source = get_source(name)
    found = find_files(name, data_dir)
    if found is not None:
        return found
    target = download_dir(name, data_dir)
    if not download_missing:
        raise ReconadError(_missing_message(source, target, "downloading is off"))
    bases = mirrors if mirrors is not None else source.mirrors
    paths = []
    for f in source.files:
        # Keep files an earlier, interrupted run already verified and moved into place.
        present = _find_file(target, f)
        if present is not None:
            paths.append(present)
            continue
        urls = [base.rstrip("/") + "/" + f.gz_name for base in bases]
        try:
            paths.append(download(urls, target / f.gz_name, f.md5s, progress=progress))
        except MirrorsUnreachable as exc:
            raise ReconadError(
                _missing_message(source, target, f"the download failed {exc}")
            ) from None
    return paths


def _read_verified(path: Path, expected: IdxFile, source: NamedSource) -> np.ndarray:
    """Read one IDX file, checking it against the known md5 sums of ``expected``."""
    content = read_idx_bytes(path)
    if expected.md5_content is not None:
        got, want = hashlib.md5(content).hexdigest(), expected.md5_content
        what = "content md5"
    elif expected.md5_gz is not None and is_gzip(path):
        got, want = hashlib.md5(path.read_bytes()).hexdigest(), expected.md5_gz
        what = "md5"
    else:  # an unzipped file without a published content md5: the IDX checks must do
        got = want = what = ""
    if got != want:
        raise ReconadError(
            f"{path} has {what} {got}, expected {want}: it is not {source.name}'s "
            f"{expected.name} (another dataset's file, or a corrupt copy); keep each dataset in "
            f"its own folder <data dir>/{source.name}/, or delete a corrupt copy so it is "
            "downloaded again"
        )
    return parse_idx(content, path)


def load_named(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> Dataset:
    """Load a named dataset as uint8 ``(N, 1, 28, 28)`` images (grey levels 0..255, as stored;
    :func:`reconad.data.float_batch` makes a batch float32 in [0, 1]) and int64 labels.

    Args:
        name: ``mnist``, ``fashion-mnist`` or ``kmnist``.
        data_dir: the configured data folder (CLI ``--data-dir``).
        download: download missing files from the mirrors (checksums verified).
        mirrors: base URLs replacing the dataset's mirrors.

    Returns:
        The dataset with its canonical train/test split.
    """
    source = get_source(name)
    paths = ensure_files(name, data_dir, download_missing=download, mirrors=mirrors)
    train_x, train_y, test_x, test_y = (
        _read_verified(p, f, source) for p, f in zip(paths, source.files, strict=True)
    )
    for images, labels, (pi, pl) in ((train_x, train_y, paths[:2]), (test_x, test_y, paths[2:])):
        if (images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels)
                or images.dtype != np.uint8):
            raise ReconadError(
                f"{pi} ({images.dtype} {images.shape}) and {pl} {labels.shape} do not form an "
                "uint8 image/label pair; "
                "delete them and download again"
            )
    return Dataset(
        name=source.name,
        train_x=train_x[:, None],  # (N, H, W) -> (N, 1, H, W), uint8 kept
        train_y=train_y.astype(np.int64),
        test_x=test_x[:, None],
        test_y=test_y.astype(np.int64),
    )

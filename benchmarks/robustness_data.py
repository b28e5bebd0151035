"""The robustness suite's image collections, generated deterministically (nothing downloaded
beyond MNIST, which the other benchmarks read too).

Each :class:`Collection` writes its files into a folder of its own (atomically: a folder is
complete or absent) and names the ``data.*`` overrides that point a run at them, plus the one
scenario every preset is judged on (``scenario.*`` overrides, so all presets see the same
split). The same arguments give the same images; a finished folder is reused.

- ``mnist``: a stratified, seeded 3,000 / 1,000 subset of MNIST (``.npz``);
- ``digits-8x8``: scikit-learn's bundled 8x8 digits (1,797 images, 0..16 grey levels scaled to
  0..255) as a PNG folder with one sub-folder per digit (test split by ``data.test_fraction``);
- ``mnist-14``, ``mnist-56``: the MNIST subset resized (:func:`reconad.data.prepare`, bilinear
  with antialiasing); ``mnist-56`` keeps 1,500 of its training images;
- ``mnist-inverted``: ``255 - x`` (dark digits on white);
- ``mnist-colour``: RGB, digit and background each in one random colour per image (seeded,
  at least :data:`MIN_COLOUR_DISTANCE` apart so the digit stays visible);
- ``photos``: 32x32 RGB crops of scikit-image's bundled photographs, one class per photograph,
  training crops from the top 70 % of each photograph and test crops from the rest (no test
  crop overlaps a training crop), as ``train/`` and ``test/`` PNG folders;
- ``texture-brick``, ``texture-grass``, ``texture-gravel``: the generated texture-defect
  datasets (:func:`reconad.data.make_defect_dataset`, 64x64 RGB, MVTec AD layout).

Scenarios: the digit collections hold out 8s (dev anomalies) and 4s (eval anomalies), as the
issue's command does; ``photos`` holds out two photographs; the textures' normals are the
good patches, the dev anomalies scratches and blots, the eval anomalies missing pieces and
colour shifts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from reconad.data import load_named, make_defect_dataset, prepare, stratified_sample
from reconad.files import atomic_directory

VERSION = 2  # of the builders: a cached folder of another version is built again
# Sizes by --quick, chosen so that one seed of every preset (conv-rgb's 30 conv epochs
# dominate) runs in about an hour on 2 cores.
MNIST_SIZES = {False: (3000, 1000), True: (1000, 400)}  # (train, test)
LARGE_TRAIN = {False: 1500, True: 500}  # mnist-56: a stratified part of the training images
PHOTO_CROPS = {False: (400, 100), True: (100, 40)}  # per photograph: (train, test)
TEXTURE_SIZES = {False: (400, 150, 100), True: (150, 40, 40)}  # train, test good, defective
PHOTO_SIDE = 32
TEXTURE_SIDE = 64
MIN_COLOUR_DISTANCE = 120.0  # Euclidean, in 0..255 RGB units
TRAIN_ROWS = 0.7
PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
          "rocket", "stereo_motorcycle")
DIGIT_SCENARIO = ["scenario.normal=null", "scenario.dev_anomaly=[8]",
                  "scenario.eval_anomaly=[4]"]
PHOTO_SCENARIO = ["scenario.normal=null", "scenario.dev_anomaly=[coffee]",
                  "scenario.eval_anomaly=[chelsea]"]
TEXTURE_SCENARIO = ["scenario.normal=[good]", "scenario.dev_anomaly=[blot,scratch]",
                    "scenario.eval_anomaly=[color,missing]"]
# What every preset's scenario is set to besides the classes: the same split for all.
COMMON_SCENARIO = ["scenario.kind=holdout", "scenario.split_final=false",
                   "scenario.val_fraction=0.1"]


@dataclass(frozen=True)
class Collection:
    """One collection: how to write it and how a run reads it."""

    name: str
    what: str
    write: Callable[..., list[str]]
    """``write(folder, quick, mnist_dir, sources_only=False)`` fills ``folder`` (unless
    ``sources_only``) and returns the ``data.*`` overrides that load its files."""
    scenario: list[str]


def build(collection: Collection, cache: Path, quick: bool, mnist_dir: str | None) -> list[str]:
    """Write ``collection`` under ``cache`` unless a complete copy of the same version and
    budget is there; the data and scenario overrides of a run on it."""
    folder = cache / collection.name
    stamp = {"collection": collection.name, "version": VERSION, "quick": quick}
    info = folder / "collection.json"
    if not (info.is_file() and json.loads(info.read_text()) == stamp):
        with atomic_directory(folder, overwrite=True) as tmp:
            collection.write(tmp, quick, mnist_dir)
            (tmp / "collection.json").write_text(json.dumps(stamp) + "\n")
    return [*collection.write(folder, quick, mnist_dir, sources_only=True), *COMMON_SCENARIO,
            *collection.scenario]


# --------------------------------------------------------------------------- MNIST-based


@lru_cache(maxsize=2)
def mnist_subset(quick: bool, mnist_dir: str | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified seeded subset of MNIST: uint8 ``(N, 1, 28, 28)`` train and test images and
    their labels, :data:`MNIST_SIZES` by budget."""
    named = load_named("mnist", mnist_dir, download=True)
    n_train, n_test = MNIST_SIZES[quick]
    train = stratified_sample(len(named.train_x), named.train_y, n_train, seed=[0, 1])
    test = stratified_sample(len(named.test_x), named.test_y, n_test, seed=[0, 2])
    return (named.train_x[train], named.train_y[train], named.test_x[test],
            named.test_y[test])


def _npz_writer(transform: Callable[[np.ndarray, int], np.ndarray], large: bool = False):
    """A writer of ``images.npz``: the MNIST subset passed through ``transform(x, stream)``
    (``stream`` 0 for the training images, 1 for the test images); ``large`` images keep
    only :data:`LARGE_TRAIN` training images (a stratified part of the subset's)."""

    def write(folder: Path, quick: bool, mnist_dir: str | None,
              sources_only: bool = False) -> list[str]:
        path = folder / "images.npz"
        if not sources_only:
            x, y, x_test, y_test = mnist_subset(quick, mnist_dir)
            if large:
                keep = stratified_sample(len(x), y, LARGE_TRAIN[quick], seed=[0, 5])
                x, y = x[keep], y[keep]
            np.savez(path, x=transform(x, 0), y=y, x_test=transform(x_test, 1), y_test=y_test)
        return [f"data.source={path}"]

    return write


def _as_uint8(images: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] (or uint8) -> uint8 grey levels."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def resized(side: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """A transform resizing images to ``side x side``."""
    return lambda x, _: _as_uint8(prepare(x, (side, side)))


def inverted(x: np.ndarray, _: int) -> np.ndarray:
    """Dark digits on white: ``255 - x``."""
    return (255 - x).astype(np.uint8)


def colourised(x: np.ndarray, stream: int) -> np.ndarray:
    """Grey ``(N, 1, H, W)`` -> RGB ``(N, 3, H, W)``: each image's background in one random
    colour and its digit in another, at least :data:`MIN_COLOUR_DISTANCE` apart (seeded by
    ``stream``)."""
    rng = np.random.default_rng([0, 3, stream])
    colours = np.empty((len(x), 2, 3))
    for i in range(len(x)):
        while True:  # redraw until digit and background differ enough
            pair = rng.uniform(0, 255, (2, 3))
            if np.linalg.norm(pair[0] - pair[1]) >= MIN_COLOUR_DISTANCE:
                break
        colours[i] = pair
    ink = x.astype(np.float64) / 255.0  # (N, 1, H, W)
    bg, fg = colours[:, 0, :, None, None], colours[:, 1, :, None, None]  # (N, 3, 1, 1)
    return np.round(bg + (fg - bg) * ink).astype(np.uint8)


# --------------------------------------------------------------------------- folders


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """uint8 ``(C, H, W)`` (C = 1 or 3) as a PNG, folders created."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def digits_8x8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as uint8 ``(1797, 1, 8, 8)`` grey levels and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return x, digits.target.astype(np.int64)


def write_digits(folder: Path, quick: bool, mnist_dir: str | None,
                 sources_only: bool = False) -> list[str]:
    """``digits/<digit>/<i>.png``: every bundled digit (the set is small: no quick cap)."""
    root = folder / "digits"
    if not sources_only:
        x, y = digits_8x8()
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            _write_png(root / str(label) / f"{i:04d}.png", image)
    return [f"data.source={root}"]


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as uint8 RGB ``(3, H, W)``."""
    import skimage.data

    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo pair: the left view
    return np.ascontiguousarray(image[:, :, :3].transpose(2, 0, 1))


def photo_crops(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per photograph: uint8 ``(n, 3, 32, 32)`` training crops from its top 70 % and test
    crops from the rest (seeded, one stream per photograph)."""
    n_train, n_test = PHOTO_CROPS[quick]
    out = {}
    for k, name in enumerate(PHOTOS):
        image = photo(name)
        split = round(TRAIN_ROWS * image.shape[1])
        rng = np.random.default_rng([0, 4, k])
        out[name] = (_crops(image, n_train, (0, split), rng),
                     _crops(image, n_test, (split, image.shape[1]), rng))
    return out


def _crops(image: np.ndarray, n: int, rows: tuple[int, int],
           rng: np.random.Generator) -> np.ndarray:
    tops, lefts = crop_corners(image.shape, n, rows, rng)
    return np.stack([image[:, t:t + PHOTO_SIDE, c:c + PHOTO_SIDE]
                     for t, c in zip(tops, lefts, strict=True)])


def crop_corners(shape: tuple[int, ...], n: int, rows: tuple[int, int],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of ``n`` random crops of an image of ``shape`` (C, H, W) lying wholly
    within rows ``[start, stop)``."""
    tops = rng.integers(rows[0], rows[1] - PHOTO_SIDE + 1, n)
    lefts = rng.integers(0, shape[2] - PHOTO_SIDE + 1, n)
    return tops, lefts


def write_photos(folder: Path, quick: bool, mnist_dir: str | None,
                 sources_only: bool = False) -> list[str]:
    """``train/<photo>/<i>.png`` and ``test/<photo>/<i>.png``."""
    if not sources_only:
        for name, (train, test) in photo_crops(quick).items():
            for split, crops in (("train", train), ("test", test)):
                for i, crop in enumerate(crops):
                    _write_png(folder / split / name / f"{i:04d}.png", crop)
    return [f"data.source={folder / 'train'}", f"data.test_source={folder / 'test'}"]


def texture_writer(texture: str):
    """A writer of the generated ``texture`` defect dataset (MVTec AD layout)."""

    def write(folder: Path, quick: bool, mnist_dir: str | None,
              sources_only: bool = False) -> list[str]:
        root = folder / texture
        if not sources_only:
            n_train, n_good, n_defect = TEXTURE_SIZES[quick]
            make_defect_dataset(root, texture, n_train, n_good, n_defect, size=TEXTURE_SIDE,
                                seed=0)
        return [f"data.source={root}"]

    return write


COLLECTIONS = [
    Collection("mnist", "MNIST 28x28, 3,000 train / 1,000 test", _npz_writer(lambda x, _: x),
               DIGIT_SCENARIO),
    Collection("digits-8x8", "scikit-learn's 8x8 digits as a PNG folder (1,797 images)",
               write_digits, DIGIT_SCENARIO),
    Collection("mnist-14", "the MNIST subset resized to 14x14", _npz_writer(resized(14)),
               DIGIT_SCENARIO),
    Collection("mnist-56", "the MNIST subset resized to 56x56, 1,500 train / 1,000 test",
               _npz_writer(resized(56), large=True), DIGIT_SCENARIO),
    Collection("mnist-inverted", "the MNIST subset, 255 - x", _npz_writer(inverted),
               DIGIT_SCENARIO),
    Collection("mnist-colour", "the MNIST subset in RGB, random digit and background colours",
               _npz_writer(colourised), DIGIT_SCENARIO),
    Collection("photos", "32x32 RGB crops of 7 scikit-image photographs, 400 train / 100 "
               "test each, PNG folders",
               write_photos, PHOTO_SCENARIO),
    *(Collection(f"texture-{t}", f"generated {t} texture patches 64x64 RGB, 400 train / 150 "
                 "good + 100 defective test",
                 texture_writer(t), TEXTURE_SCENARIO) for t in ("brick", "grass", "gravel")),
]

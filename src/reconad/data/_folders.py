"""Folders of image files: the sorted listing (class sub-folders or one flat folder) and the
reading of one file into pixels, shared by the loaders (:mod:`reconad.data`), streaming
(:mod:`reconad.data`) and streamed training (:mod:`reconad.data`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from reconad.data._images import as_images, stored_images
from reconad.errors import ReconadError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm"}

FORMATS = "a .npz/.npy file, a folder of images (PNG/JPEG/BMP), a .csv or an IDX image file"


def _visible(name: str) -> bool:
    """Hidden files (.DS_Store, editor swap files) are not images."""
    return not name.startswith(".")


def list_image_folder(folder: Path) -> tuple[list[Path], list[str] | None]:
    """The image files of ``folder`` in a stable order, and the class name of each.

    Files directly in ``folder`` are unlabelled (class names None); otherwise every visible
    sub-folder is a class and its files (searched recursively) are listed class by class,
    each part sorted. Hidden files and folders are skipped.

    Raises:
        ReconadError: files beside class folders, an empty class folder, no images at all.
    """
    entries = sorted(p for p in folder.iterdir() if _visible(p.name))
    dirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file()]
    if dirs and files:
        raise ReconadError(
            f"{folder} holds both files (e.g. {files[0].name}) and sub-folders (e.g. "
            f"{dirs[0].name}); put every image in a class sub-folder, or all directly in "
            f"{folder} for unlabelled images"
        )
    label_names: list[str] | None = None
    if dirs:
        label_names = []
        files = []
        for class_dir in dirs:
            inside = sorted(
                p for p in class_dir.rglob("*")
                if p.is_file() and all(_visible(part) for part in p.relative_to(class_dir).parts)
            )
            if not inside:
                raise ReconadError(
                    f"class folder {class_dir} holds no images; add some or remove it"
                )
            files += inside
            label_names += [class_dir.name] * len(inside)
    if not files:
        raise ReconadError(f"{folder} holds no images; give {FORMATS}")
    return files, label_names


def file_id(path: Path, root: Path) -> str:
    """An image file's id: its path relative to the folder it was read from, with ``/``
    separators (``good/0001.png``, ``test/scratch/000.png``)."""
    return path.relative_to(root).as_posix()


def read_image(path: Path, folder: Path, stored: bool = False) -> np.ndarray:
    """One image file as float32 ``(C, H, W)`` in [0, 1], C = 1 (grey) or 3 (colour); with
    ``stored`` an 8-bit file stays uint8 (its grey levels).

    Raises:
        ReconadError: the file is not an image Pillow can read (the message names it and
            ``folder``).
    """
    from PIL import Image

    try:
        # Pillow warns (EXIF/TIFF tag) about files it then reads or refuses: the outcome is
        # what counts, and a refused file gets the one-line error below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(path)
            image.load()
        with image:
            mode = image.mode
            if mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey
                grey = np.asarray(image, dtype=np.float64) / 65535.0
                return np.clip(grey, 0.0, 1.0).astype(np.float32)[None]
            if mode == "F":
                pixels = np.asarray(image, dtype=np.float32)[None]  # (1, H, W), checked below
            elif mode in ("1", "L", "LA", "La"):
                pixels = np.asarray(image.convert("L"))[None]  # (1, H, W), alpha dropped
            else:
                pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)  # (3, H, W)
    except Exception as exc:  # Pillow raises many types for a file that is not an image
        raise ReconadError(
            f"{path} is not an image Pillow can read ({type(exc).__name__}: {exc}); remove it "
            f"from {folder} or convert it to PNG"
        ) from None
    if stored:
        return stored_images(pixels[None], str(path))[0]
    return as_images(pixels[None], str(path))[0]  # (C, H, W): uint8 / 255, floats as they are

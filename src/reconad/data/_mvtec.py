"""Defect datasets with pixel masks: the MVTec AD layout and a plain images/masks layout.

MVTec AD layout (one category)::

    ROOT/train/good/*.png                    normal training images
    ROOT/test/good/*.png                     normal test images (no mask: all zeros)
    ROOT/test/<kind>/<name>.png              defective test images, one folder per defect kind
    ROOT/ground_truth/<kind>/<name>_mask.png their masks (white = defect)

Plain layout (no predefined split: ``train`` is all False, callers split the good images)::

    ROOT/images/<class>/<name>.png           class ``good`` = normal, any other = a defect kind
    ROOT/masks/<class>/<name>.png            (or ``<name>_mask.png``; optional for ``good``)

Images come back as they are stored (uint8, no rescaling); grey images next to colour ones
get three equal channels. A mask pixel is a defect when its grey value is above 127.

Example (MVTec AD ``bottle``)::

    data = read_defect_dataset("mvtec/bottle", resize=(256, 256))
    data.images.shape, data.masks.shape  # (N, 3, 256, 256), (N, 256, 256)
    data.kinds[-1], data.ids[-1]         # 'contamination', 'test/contamination/020.png'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reconad.data._folders import IMAGE_SUFFIXES, file_id
from reconad.data._prepare import LUMA
from reconad.errors import ReconadError
from reconad.files import atomic_directory

NORMAL_KIND = "good"
_MVTEC = "train/good, test/<kind>, ground_truth/<kind>"
_PLAIN = "images/<class>, masks/<class>"


@dataclass(frozen=True)
class DefectDataset:
    """Images with defect masks, in a fixed order (train first, then test; sorted paths)."""

    images: np.ndarray
    """uint8 ``(N, C, H, W)``, C = 1 or 3."""
    masks: np.ndarray
    """bool ``(N, H, W)``, True = defect pixel; all False for normal images."""
    kinds: np.ndarray
    """str ``(N,)``: ``good`` or the defect kind (the folder name)."""
    ids: np.ndarray
    """str ``(N,)``: each image's path relative to the root, e.g. ``test/scratch/000.png``."""
    train: np.ndarray
    """bool ``(N,)``: in the dataset's own training split (MVTec ``train/``)."""

    @property
    def labels(self) -> np.ndarray:
        """int64 ``(N,)``: 1 = defective image, 0 = normal."""
        return (self.kinds != NORMAL_KIND).astype(np.int64)

    def float_images(self) -> np.ndarray:
        """float32 ``(N, C, H, W)`` in [0, 1] (uint8 / 255), reconad's image convention."""
        return self.images.astype(np.float32) / np.float32(255.0)

    def subset(self, keep: np.ndarray) -> DefectDataset:
        """The images selected by a bool mask or index array ``keep``."""
        return DefectDataset(self.images[keep], self.masks[keep], self.kinds[keep],
                             self.ids[keep], self.train[keep])


def is_defect_layout(root: str | Path) -> bool:
    """Whether ``root`` is a folder in the MVTec AD layout (``train/good`` and ``test``) or the
    plain layout (``images`` and ``masks``), so that it is read with its masks."""
    root = Path(root).expanduser()
    return ((root / "train" / NORMAL_KIND).is_dir() and (root / "test").is_dir()) or (
        (root / "images").is_dir() and (root / "masks").is_dir())


def read_defect_dataset(
    root: str | Path, resize: tuple[int, int] | None = None, grayscale: bool = False
) -> DefectDataset:
    """Read a defect dataset in the MVTec AD or the plain layout (see the module docstring).

    Args:
        root: The dataset folder (for MVTec AD: one category, e.g. ``mvtec/bottle``).
        resize: (height, width) every image (bilinear) and mask (nearest) is resized to;
            None = keep the sizes, which must then all be equal.
        grayscale: Convert colour images to one grey channel (ITU-R 601-2 luma).

    Returns:
        The images, masks, kinds, ids and train flags.

    Raises:
        ReconadError: a missing folder, an unreadable image, a mask without its image or of
            another size, a defective image without a mask, images of different sizes.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ReconadError(f"defect dataset folder {root} does not exist; give a folder laid out "
                           f"as MVTec AD ({_MVTEC}) or plain ({_PLAIN})")
    if (root / "images").is_dir():
        entries = _plain_entries(root)
    elif (root / "train").is_dir() or (root / "test").is_dir():
        entries = _mvtec_entries(root)
    else:
        raise ReconadError(f"{root} holds neither the MVTec AD layout ({_MVTEC}) nor the plain "
                           f"layout ({_PLAIN}); arrange the images in one of them")
    images, masks = [], []
    for image_path, mask_path, kind, _ in entries:
        image = _read_pixels(image_path, root)  # (C, H, W) uint8
        mask = np.zeros(image.shape[1:], dtype=bool)
        if mask_path is not None:
            mask = _read_pixels(mask_path, root, as_mask=True)
            if mask.shape != image.shape[1:]:
                raise ReconadError(
                    f"mask {mask_path} is {_hw(mask.shape)} but its image {image_path} is "
                    f"{_hw(image.shape[1:])} (HxW); save the mask at the image's size"
                )
            if kind == NORMAL_KIND and mask.any():
                raise ReconadError(
                    f"mask {mask_path} marks defects on the good image {image_path}; move the "
                    "image to a defect folder or clear its mask"
                )
        if grayscale and image.shape[0] == 3:
            image = np.round(np.tensordot(LUMA, image, axes=1)).astype(np.uint8)[None]
        if resize is not None:  # right away: never hold every full-size image at once
            image, mask = _resize(image, resize), _resize_mask(mask, resize)
        images.append(image)
        masks.append(mask)
    images = _same_size(images, entries)
    return DefectDataset(
        images=np.stack(images),
        masks=np.stack(masks),
        kinds=np.array([kind for _, _, kind, _ in entries]),
        ids=np.array([file_id(p, root) for p, _, _, _ in entries]),
        train=np.array([is_train for _, _, _, is_train in entries], dtype=bool),
    )


def write_defect_dataset(
    root: str | Path,
    train: np.ndarray,
    test_good: np.ndarray,
    defects: list[tuple[str, np.ndarray, np.ndarray]],
    info: dict,
    overwrite: bool = False,
) -> Path:
    """Write images with masks in the MVTec AD layout that :func:`read_defect_dataset` reads.

    ``ROOT/train/good``, ``ROOT/test/good``, ``ROOT/test/<kind>``,
    ``ROOT/ground_truth/<kind>/<name>_mask.png`` (0/255) and ``ROOT/dataset.json`` (``info``).
    Names are zero-padded counters (at least 3 digits), counted per folder in the given order.

    Args:
        root: Output folder (written atomically; must be empty or absent unless ``overwrite``).
        train: uint8 ``(N, C, H, W)`` normal training images, C = 1 (saved grey) or 3.
        test_good: uint8 ``(M, C, H, W)`` normal test images.
        defects: ``(kind, image (C, H, W) uint8, mask (H, W) bool)`` per defective test image.
        info: What was generated, written as ``dataset.json``.
        overwrite: Replace an existing non-empty ``root``.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    digits = max(3, len(str(max(len(train), len(test_good), len(defects)))))
    counts: dict[str, int] = {}
    with atomic_directory(root, overwrite) as tmp:
        for i, image in enumerate(train):
            _write_png(tmp / "train/good" / f"{i:0{digits}d}.png", image)
        for i, image in enumerate(test_good):
            _write_png(tmp / "test/good" / f"{i:0{digits}d}.png", image)
        for kind, image, mask in defects:
            name = f"{counts.setdefault(kind, 0):0{digits}d}"
            counts[kind] += 1
            _write_png(tmp / "test" / kind / f"{name}.png", image)
            _write_png(tmp / "ground_truth" / kind / f"{name}_mask.png",
                       mask[None].astype(np.uint8) * 255)
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return root


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """uint8 ``(C, H, W)`` (C = 1 or 3) as a PNG, folders created."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


# (image path, mask path or None, kind, in the training split)
_Entry = tuple[Path, Path | None, str, bool]


def _mvtec_entries(root: Path) -> list[_Entry]:
    for needed in ("train/good", "test"):
        if not (root / needed).is_dir():
            raise ReconadError(f"{root} lacks the folder {needed}; the MVTec AD layout is "
                               f"{_MVTEC} (normal training images in train/good)")
    extra = [p.name for p in _folders(root / "train") if p.name != NORMAL_KIND]
    if extra:
        raise ReconadError(f"{root}/train/{extra[0]}: training images must be normal (train/good "
                           f"only); move defective images to test/{extra[0]}")
    entries: list[_Entry] = [(p, None, NORMAL_KIND, True) for p in _images(root / "train/good")]
    kinds = [p.name for p in _folders(root / "test")]
    if not kinds:
        raise ReconadError(f"{root}/test holds no folders; put test images in test/good and "
                           "test/<defect kind>")
    truth = root / "ground_truth"
    for kind in sorted(p.name for p in _folders(truth)) if truth.is_dir() else []:
        if kind not in kinds:
            raise ReconadError(f"{truth / kind} has masks but there is no test/{kind}; add the "
                               "images or remove the masks")
    for kind in kinds:
        images = _images(root / "test" / kind)
        masks = _masks_of(images, root / "test" / kind, truth / kind, kind)
        entries += [(p, m, kind, False) for p, m in zip(images, masks, strict=True)]
    return entries


def _plain_entries(root: Path) -> list[_Entry]:
    kinds = [p.name for p in _folders(root / "images")]
    if not kinds:
        raise ReconadError(f"{root}/images holds no class folders; put the images in "
                           "images/good and images/<defect kind>")
    masks_root = root / "masks"
    if masks_root.is_dir():
        for kind in (p.name for p in _folders(masks_root)):
            if kind not in kinds:
                raise ReconadError(f"{masks_root / kind} has masks but there is no images/{kind}; "
                                   "add the images or remove the masks")
    entries: list[_Entry] = []
    for kind in kinds:
        images = _images(root / "images" / kind)
        masks = _masks_of(images, root / "images" / kind, masks_root / kind, kind)
        entries += [(p, m, kind, False) for p, m in zip(images, masks, strict=True)]
    return entries


def _masks_of(images: list[Path], image_dir: Path, mask_dir: Path, kind: str) -> list[Path | None]:
    """The mask of each image (``<name>_mask.*`` or ``<name>.*`` at the same relative place);
    every defective image needs one and every mask needs an image."""
    by_key: dict[str, Path] = {}
    if mask_dir.is_dir():
        for mask in _images(mask_dir, allow_empty=True):
            key = mask.relative_to(mask_dir).with_suffix("").as_posix()
            by_key[key] = mask
    found: list[Path | None] = []
    used: set[str] = set()
    for image in images:
        key = image.relative_to(image_dir).with_suffix("").as_posix()
        candidates = [k for k in (key + "_mask", key) if k in by_key]
        if len(candidates) > 1:
            raise ReconadError(f"{image} has two masks, {by_key[candidates[0]]} and "
                               f"{by_key[candidates[1]]}; keep one")
        if not candidates and kind != NORMAL_KIND:
            raise ReconadError(f"defective image {image} has no mask; add "
                               f"{mask_dir / key}_mask.png (white = defect) or move the image "
                               "to the good folder if it has no defect")
        used.update(candidates)
        found.append(by_key[candidates[0]] if candidates else None)
    orphans = sorted(set(by_key) - used)
    if orphans:
        raise ReconadError(f"mask {by_key[orphans[0]]} has no image {image_dir / orphans[0]}.*; "
                           "add the image or remove the mask")
    return found


def _folders(parent: Path) -> list[Path]:
    """The visible sub-folders of ``parent``; loose files next to them are an error."""
    visible = sorted(p for p in parent.iterdir() if not p.name.startswith("."))
    loose = [p for p in visible if not p.is_dir()]
    if loose:
        raise ReconadError(f"{loose[0]} lies directly in {parent}; put it in a sub-folder named "
                           "after its kind (good or the defect)")
    return visible


def _images(folder: Path, allow_empty: bool = False) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden ones skipped), sorted."""
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    odd = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if odd:
        raise ReconadError(f"{odd[0]} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           "remove it from the dataset folder")
    if not files and not allow_empty:
        raise ReconadError(f"{folder} holds no images; add some or remove the folder")
    return files


def _read_pixels(path: Path, root: Path, as_mask: bool = False) -> np.ndarray:
    """An image as uint8 ``(C, H, W)`` (C = 1 grey, 3 colour) or a mask as bool ``(H, W)``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit grey: keep the top 8 bits
                grey = np.round(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)
            elif image.mode in ("1", "L", "LA", "La", "I", "F") or as_mask:
                grey = np.asarray(image.convert("L"))
            else:
                return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()  # (3, H, W)
    except Exception as exc:  # Pillow raises many types for a file that is not an image
        raise ReconadError(
            f"{path} is not an image Pillow can read ({type(exc).__name__}: {exc}); remove it "
            f"from {root} or convert it to PNG"
        ) from None
    return grey > 127 if as_mask else grey[None]


def _same_size(images: list[np.ndarray], entries: list[_Entry]) -> list[np.ndarray]:
    """Grey images get three channels when others are colour; all must have one size."""
    if any(im.shape[0] == 3 for im in images):
        images = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    first = images[0].shape[1:]
    for (path, _, _, _), image in zip(entries, images, strict=True):
        if image.shape[1:] != first:
            raise ReconadError(
                f"images differ in size: {entries[0][0]} is {_hw(first)} but {path} is "
                f"{_hw(image.shape[1:])} (HxW); pass resize=(height, width) "
                "(config: data.resize)"
            )
    return images


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(C, H, W)`` -> ``(C, height, width)``, bilinear with antialiasing (Pillow)."""
    from PIL import Image

    if tuple(image.shape[1:]) == tuple(size):
        return image
    height, width = size
    return np.stack([
        np.asarray(Image.fromarray(channel).resize((width, height), Image.Resampling.BILINEAR))
        for channel in image
    ])


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if tuple(mask.shape) == tuple(size):
        return mask
    height, width = size
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height),
                                                               Image.Resampling.NEAREST)
    return np.asarray(small) > 127


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)

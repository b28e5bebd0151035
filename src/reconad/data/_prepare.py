"""The one home of fitting images to a size and channel count: grey conversion, grey repeated
over colour channels, resizing, and the errors that name the option to set.

Every reader goes through here: the user's folders and arrays (:mod:`reconad.data._user`),
named datasets, collections scored batch by batch (:mod:`reconad.data._collections`) and
streamed training images (:mod:`reconad.data._streamed`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reconad.data._images import float_batch
from reconad.errors import ReconadError

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
RESIZE_HINT = "set data.resize (CLI: --set data.resize=[28,28])"


def prepare_changes(shape: Sequence[int], resize: tuple[int, int] | None,
                    grayscale: bool) -> bool:
    """Whether :func:`prepare` changes images of ``shape`` (C, H, W)."""
    return bool((grayscale and shape[0] == 3)
                or (resize is not None and tuple(shape[1:]) != tuple(resize)))


def prepare(
    images: np.ndarray, resize: tuple[int, int] | None = None, grayscale: bool = False
) -> np.ndarray:
    """Optional grey conversion and resize of ``(N, C, H, W)`` images.

    Args:
        images: ``(N, C, H, W)`` as checked by :func:`reconad.data.as_images` (any stored
            dtype).
        resize: (height, width), bilinear with antialiasing (Pillow); None = as they are.
        grayscale: RGB -> one grey channel (ITU-R 601-2 luma); grey images are unchanged.

    Returns:
        ``(N, C', H', W')``: uint8 kept as it is when nothing changes, else float32 in [0, 1].
    """
    if not prepare_changes(images.shape[1:], resize, grayscale) and images.dtype == np.uint8:
        return images  # stored grey levels: converted to float32 batch by batch later
    images = float_batch(images)
    if grayscale and images.shape[1] == 3:
        images = np.tensordot(images, LUMA, axes=([1], [0]))[:, None]  # (N, 1, H, W)
    if resize is not None and tuple(images.shape[2:]) != tuple(resize):
        from PIL import Image

        height, width = resize
        out = np.empty(images.shape[:2] + (height, width), dtype=np.float32)
        for i, image in enumerate(images):
            for c, channel in enumerate(image):  # (H, W): mode "F" keeps full precision
                small = Image.fromarray(np.ascontiguousarray(channel, np.float32), mode="F")
                out[i, c] = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))
        images = np.clip(out, 0.0, 1.0)
    return np.ascontiguousarray(images, dtype=np.float32)


def fit_channels(image: np.ndarray, channels: int, grayscale: bool, name: str) -> np.ndarray:
    """One image (C, H, W) made into ``channels``: grey conversion (``grayscale``), grey
    repeated over 3 channels among colour ones; a colour image where grey ones are wanted is
    an error naming ``name``."""
    if grayscale:
        return prepare(image[None], grayscale=True)[0]
    if image.shape[0] == 1 and channels == 3:  # a grey image among colour ones
        return np.repeat(image, 3, axis=0)
    if image.shape[0] == 3 and channels == 1:
        raise ReconadError(f"{name} is a colour image but the detector takes grey images; "
                           "pass --grayscale")
    return image


def fit_image(image: np.ndarray, name: str, shape: tuple[int, int, int],
              resize: tuple[int, int] | None, grayscale: bool) -> np.ndarray:
    """One decoded image (C, H, W) made into the detector's ``shape``, as training did.

    Grey conversion (``grayscale``), grey repeated over 3 channels for a colour detector,
    then ``resize``; a colour image for a grey detector or a wrong size is an error naming
    ``name`` and the option that fixes it.
    """
    channels, height, width = shape
    image = fit_channels(image, channels, grayscale, name)
    if resize is not None:
        image = prepare(image[None], resize)[0]
    if image.shape[1:] != (height, width):
        raise ReconadError(
            f"{name} is {image.shape[1]}x{image.shape[2]} (HxW) but the detector takes "
            f"{height}x{width} images; pass --resize {height} {width}"
        )
    return image


def fit_folder_images(images: list[np.ndarray], names: list[str],
                      resize: tuple[int, int] | None, grayscale: bool) -> list[np.ndarray]:
    """A folder's decoded images (each (C, H, W), stored dtype) made alike: grey
    (``grayscale``), else colour when any image is; ``resize`` or, without it, all of the
    first image's size (an error naming the two files and ``data.resize`` otherwise); one
    dtype (float32 when 8-bit and other files are mixed)."""
    channels = 1 if grayscale else max(im.shape[0] for im in images)
    images = [fit_channels(im, channels, grayscale, name)
              for im, name in zip(images, names, strict=True)]
    if resize is not None:
        images = [prepare(im[None], resize)[0] for im in images]
    else:
        first = images[0].shape[1:]
        for name, image in zip(names, images, strict=True):
            if image.shape[1:] != first:
                raise ReconadError(
                    f"images differ in size: {names[0]} is {first[0]}x{first[1]} (HxW) but "
                    f"{name} is {image.shape[1]}x{image.shape[2]}; {RESIZE_HINT}"
                )
    if len({im.dtype for im in images}) > 1:  # e.g. 8-bit beside 16-bit files: all float32
        images = [float_batch(im[None])[0] for im in images]
    return images

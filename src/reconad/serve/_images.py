"""An uploaded file made into the detector's image, exactly as ``reconad score`` makes a file.

The bytes are decoded by :func:`reconad.data.read_image` and fitted by
:func:`reconad.data.fit_image` with the detector's preprocessing (its stored resize and grey
conversion, or the server's ``--resize`` / ``--grayscale``): the same two calls
:class:`reconad.data.FileCollection` makes for a file on disk, so an upload scores what the
same file scores with ``reconad score``. Before that, the image's header alone is read to
refuse an image over ``max_pixels`` (a decompression bomb: a few kB of PNG that would decode
to gigabytes) without decoding it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from reconad.data import fit_image, read_image
from reconad.errors import ReconadError
from reconad.serve._http import TOO_LARGE, UNPROCESSABLE, UNSUPPORTED, ServeError, shown_name

NOT_AN_IMAGE = "send a PNG, JPEG, BMP, TIFF or WebP image"


@dataclass(frozen=True)
class Preparation:
    """How uploads become the detector's images: its (C, H, W), the resize and grey
    conversion (the detector's stored preprocessing unless the server overrides it), and the
    pixel limit."""

    shape: tuple[int, int, int]
    resize: tuple[int, int] | None
    grayscale: bool
    max_pixels: int


def decode_upload(data: bytes, name: str, prep: Preparation) -> np.ndarray:
    """One uploaded file as float32 (C, H, W) in [0, 1], fitted to the detector.

    Raises:
        ServeError: 415 not an image; 413 more than ``max_pixels`` pixels; 422 an image the
            detector cannot take (a colour image for a grey detector, a size without resize).
    """
    shown = shown_name(name)
    size = _header_size(data, shown)
    if size[0] * size[1] > prep.max_pixels:
        raise ServeError(TOO_LARGE, f"{shown} is {size[0]}x{size[1]} pixels, over the "
                                    f"{prep.max_pixels} pixels one image may have; send a "
                                    "smaller image (the server's --max-pixels)")
    try:
        image = read_image(io.BytesIO(data), "the upload")  # (C, H, W), as reconad score reads
    except ReconadError:
        raise ServeError(UNSUPPORTED, f"{shown} could not be decoded (damaged or cut short); "
                                      f"{NOT_AN_IMAGE}") from None
    try:
        return fit_image(image, shown, prep.shape, prep.resize, prep.grayscale)
    except ReconadError:
        raise ServeError(UNPROCESSABLE, _mismatch(image.shape, shown, prep)) from None


def _header_size(data: bytes, shown: str) -> tuple[int, int]:
    """(width, height) from the image's header; nothing but the header is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: our limit decides
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError:  # past twice Pillow's MAX_IMAGE_PIXELS
        raise ServeError(TOO_LARGE, f"{shown} has more pixels than Pillow's limit; send a "
                                    "smaller image (the server's --max-pixels)") from None
    except Exception as exc:  # Pillow raises many types for bytes that are not an image
        raise ServeError(UNSUPPORTED, f"{shown} is not an image Pillow can read "
                                      f"({type(exc).__name__}); {NOT_AN_IMAGE}") from None


def _mismatch(decoded: tuple[int, ...], shown: str, prep: Preparation) -> str:
    """Why an image does not fit the detector, and what the client or the server can do."""
    channels, height, width = prep.shape
    if decoded[0] == 3 and channels == 1 and not prep.grayscale:
        return (f"{shown} is a colour image but the detector takes grey images; send a grey "
                "image (or start reconad serve with --grayscale)")
    return (f"{shown} is {decoded[1]}x{decoded[2]} (HxW) but the detector takes {height}x"
            f"{width} images; send {height}x{width} images (or start reconad serve with "
            f"--resize {height} {width})")

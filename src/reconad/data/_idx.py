"""Reader for the IDX format of MNIST-like datasets, gzip-compressed or raw.

An IDX file is a 4-byte magic number ``0x00 0x00 <type code> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the values in C order, big-endian. The reader checks every
part and names the file and the fix when something is wrong, so a truncated download never
turns into a confusing NumPy error later.

>>> images = read_idx("train-images-idx3-ubyte.gz")  # doctest: +SKIP
>>> images.shape, images.dtype  # doctest: +SKIP
((60000, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from reconad.errors import ReconadError

# IDX type code -> big-endian NumPy dtype (from the format's description on LeCun's MNIST page).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
_FIX = "delete it and download it again (or place a good copy by hand)"


def is_gzip(path: str | Path) -> bool:
    """Whether the file starts with the gzip magic bytes (the name is not trusted)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def read_idx_bytes(path: str | Path) -> bytes:
    """The file's IDX content, decompressed when the file is gzip.

    Args:
        path: an IDX file, ``.gz`` or raw (detected from its first bytes, not its name).

    Returns:
        The raw IDX bytes (header and values).

    Raises:
        ReconadError: the file is missing, unreadable, or a corrupt/truncated gzip stream.
    """
    path = Path(path)
    if not path.is_file():
        raise ReconadError(f"{path} does not exist; check the path or download the dataset again")
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except EOFError:
        raise ReconadError(f"{path} is a truncated gzip file; {_FIX}") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ReconadError(f"{path} is a corrupt gzip file ({exc}); {_FIX}") from None
    except OSError as exc:
        raise ReconadError(
            f"cannot read {path} ({exc.strerror or exc}); check its permissions"
        ) from None


def parse_idx(content: bytes, name: str | Path = "<idx>") -> np.ndarray:
    """Decode IDX bytes into an array of the file's shape and dtype (native byte order).

    Args:
        content: the decompressed IDX bytes.
        name: the file name used in error messages.

    Returns:
        The array, e.g. ``(60000, 28, 28)`` uint8 for MNIST training images.

    Raises:
        ReconadError: wrong magic number, unknown type code, or too few/too many value bytes.
    """
    if len(content) < 4:
        raise ReconadError(f"{name} is too short to be an IDX file ({len(content)} bytes); {_FIX}")
    zero0, zero1, code, ndim = content[:4]
    if zero0 != 0 or zero1 != 0:
        raise ReconadError(
            f"{name} is not an IDX file (magic number starts with {content[:2].hex()}, "
            f"expected 0000); check that it is the right file or {_FIX}"
        )
    if code not in IDX_DTYPES:
        raise ReconadError(
            f"{name} has unknown IDX data type code 0x{code:02x} (expected one of "
            f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}); {_FIX}"
        )
    if ndim == 0:
        raise ReconadError(f"{name} declares 0 dimensions; {_FIX}")
    header_end = 4 + 4 * ndim
    if len(content) < header_end:
        raise ReconadError(
            f"{name} is truncated inside its header (expected {header_end} bytes, "
            f"got {len(content)}); {_FIX}"
        )
    shape = struct.unpack(f">{ndim}I", content[4:header_end])
    dtype = IDX_DTYPES[code]
    # Python integers: np.prod wraps around for huge declared sizes. A zero-sized shape with
    # huge other sides is refused too (NumPy cannot even make that empty array).
    if math.prod(max(side, 1) for side in shape) * dtype.itemsize > np.iinfo(np.intp).max:
        raise ReconadError(f"{name} declares shape {shape}, too large for any array; {_FIX}")
    expected = math.prod(shape) * dtype.itemsize
    got = len(content) - header_end
    if got < expected:
        raise ReconadError(
            f"{name} is truncated (expected {expected} bytes of values for shape {shape}, "
            f"got {got}); {_FIX}"
        )
    if got > expected:
        raise ReconadError(
            f"{name} is longer than its header says (expected {expected} bytes of values for "
            f"shape {shape}, got {got}); it is corrupt: {_FIX}"
        )
    values = np.frombuffer(content, dtype=dtype, count=expected // dtype.itemsize,
                           offset=header_end)
    # astype copies into a writable array in native byte order.
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a NumPy array, validating it.

    Args:
        path: the file, e.g. ``t10k-labels-idx1-ubyte.gz`` or its unzipped twin.

    Returns:
        The array in the file's shape and dtype, e.g. ``(10000,)`` uint8 labels.

    Raises:
        ReconadError: missing, truncated or corrupt file (bad gzip, wrong magic, wrong length).
    """
    return parse_idx(read_idx_bytes(path), path)

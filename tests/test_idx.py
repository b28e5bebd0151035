"""The IDX reader: real MNIST files, and tiny hand-built files with every kind of damage."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from reconad.data import parse_idx, read_idx
from reconad.errors import ReconadError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file built by hand from the format's description (the oracle)."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, content: bytes, compress: bool) -> Path:
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def test_real_mnist_shapes_and_label_counts(mnist_dir):
    train_y = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    test_y = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    test_x = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == np.uint8
    assert np.bincount(train_y).tolist() == TRAIN_COUNTS
    assert np.bincount(test_y).tolist() == TEST_COUNTS


def test_real_mnist_train_images_match_published_content_md5(mnist_dir):
    images = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    # Rebuild the decompressed file from the array: its md5 is the one in MD5SUMS.
    rebuilt = idx_bytes(images, 0x08)
    md5sums = dict(line.split()[::-1] for line in (mnist_dir / "MD5SUMS").read_text().splitlines())
    assert hashlib.md5(rebuilt).hexdigest() == md5sums["train-images-idx3-ubyte"]
    assert 0 < images.mean() < 255 and images.max() == 255


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    ("dtype", "code"),
    [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
     (np.float32, 0x0D), (np.float64, 0x0E)],
)
def test_round_trip_every_type_code(tmp_path, dtype, code, compress):
    rng = np.random.default_rng(0)
    array = (rng.uniform(-100, 100, size=(3, 4, 5)) if dtype not in (np.uint8,) else
             rng.integers(0, 256, size=(3, 4, 5))).astype(dtype)
    got = read_idx(write(tmp_path / "a.idx", idx_bytes(array, code), compress))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)
    got[0, 0, 0] = 1  # writable, not a view on the file's bytes


def test_gzip_detected_from_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    unzipped_but_named_gz = write(tmp_path / "labels.gz", idx_bytes(array, 0x08), compress=False)
    np.testing.assert_array_equal(read_idx(unzipped_but_named_gz), array)


def test_truncated_gz(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8), 0x08))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ReconadError, match=r"t10k-images-idx3-ubyte\.gz is a truncated gzip .*"
                                           r"delete it and download it again"):
        read_idx(path)


def test_corrupt_gz_crc(tmp_path):
    blob = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8), 0x08)))
    blob[-6] ^= 0xFF  # inside the CRC32 trailer
    path = write(tmp_path / "x.gz", bytes(blob), compress=False)
    with pytest.raises(ReconadError, match=r"x\.gz is a corrupt gzip file"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = write(tmp_path / "x.idx", b"PK\x03\x04" + bytes(20), compress=True)
    with pytest.raises(ReconadError, match=r"x\.idx is not an IDX file \(magic number starts "
                                           r"with 504b"):
        read_idx(path)


def test_unknown_type_code(tmp_path):
    path = write(tmp_path / "x.idx", bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\0",
                 compress=False)
    with pytest.raises(ReconadError, match=r"unknown IDX data type code 0x07"):
        read_idx(path)


def test_truncated_values_names_expected_and_got(tmp_path):
    content = idx_bytes(np.zeros((10, 28, 28), np.uint8), 0x08)
    path = write(tmp_path / "t10k-images-idx3-ubyte.gz", content[:-(7840 - 1200)], compress=True)
    with pytest.raises(ReconadError, match=r"t10k-images-idx3-ubyte\.gz is truncated \(expected "
                                           r"7840 bytes .* got 1200\)"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = write(tmp_path / "x.idx", bytes([0, 0, 8, 3]) + struct.pack(">I", 5), compress=False)
    with pytest.raises(ReconadError, match=r"truncated inside its header \(expected 16 bytes"):
        read_idx(path)


def test_too_long(tmp_path):
    path = write(tmp_path / "x.idx", idx_bytes(np.zeros(4, np.int16), 0x0B) + b"\0",
                 compress=True)
    with pytest.raises(ReconadError, match=r"longer than its header says \(expected 8 bytes .*"
                                           r"got 9\)"):
        read_idx(path)


def test_missing_and_too_short(tmp_path):
    with pytest.raises(ReconadError, match=r"nope\.gz does not exist"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(ReconadError, match=r"too short to be an IDX file \(2 bytes\)"):
        read_idx(write(tmp_path / "s", b"\0\0", compress=False))


def test_shape_too_large_for_any_array_is_named(tmp_path):
    # Found by the 10,000-input fuzz benchmark: a zero side next to 2**32-1 sides passed the
    # size check (0 bytes expected) and NumPy then failed to make the empty array.
    content = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1)
    with pytest.raises(ReconadError, match="too large for any array"):
        parse_idx(content, "x")
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(ReconadError, match="too large for any array"):
        read_idx(path)
    found = (b"\x00\x00\x0b\x07\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x04\x00\x00"
             b"\x00\x00\x80\x01\x80\x01\x80\x01\x80\x01\x80\x11\x80\x01")  # the fuzz input
    with pytest.raises(ReconadError, match="too large for any array"):
        parse_idx(found, "x")

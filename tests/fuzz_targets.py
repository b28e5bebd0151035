"""Every input parser as a fuzz target: a Hypothesis strategy of inputs and a check.

The property, for every target: the parser returns a correct result or raises a one-line
:class:`ReconadError`; any other exception escapes the check and is a bug. Inputs are mostly
*valid files, then damaged* (bytes flipped, truncated, garbage appended, header values swapped
for random JSON), because a purely random byte string is rejected by the first magic-number
check and tests nothing deeper.

Used by ``tests/test_fuzz.py`` (a few hundred examples per target, Hypothesis profile from
``$HYPOTHESIS_PROFILE``) and ``benchmarks/fuzz.py`` (10,000 per target, counting escapes).
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from reconad.errors import ReconadError


@dataclass(frozen=True)
class Target:
    """One parser: inputs to draw and the check that runs the parser on one of them."""

    name: str
    inputs: st.SearchStrategy
    check: Callable[[object, Path], None]  # (example, empty work folder)


def one_line_or_result(call: Callable[[], object]) -> object | None:
    """Run ``call``; a ReconadError must be one line. Other exceptions propagate."""
    try:
        return call()
    except ReconadError as exc:
        assert "\n" not in str(exc), f"error message spans several lines: {exc}"
        return None


def run_check(target: Target, example) -> None:
    """Run ``target``'s check on ``example`` in a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix="reconad-fuzz-") as work:
        target.check(example, Path(work))


# --- byte damage ---------------------------------------------------------------------------


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """``valid`` with a few bytes flipped, cut short, or with garbage appended/inserted."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["flip", "truncate", "append", "insert", "zero"]))
        if how == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif how == "append":
            data += draw(st.binary(max_size=64))
        elif how == "insert" and data:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "zero" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at : at + 4] = b"\0" * len(data[at : at + 4])
    return bytes(data)


def small_arrays(min_dims: int = 1, max_dims: int = 4):
    """Small arrays of every dtype an image file could hold (and some it should not)."""
    from hypothesis.extra import numpy as hnp

    dtypes = st.sampled_from(["u1", "i1", "<i2", ">i2", "<i4", "<f4", ">f4", "<f8", "?",
                              "<u2", "<i8", "<c8", "U3"])
    return dtypes.flatmap(lambda dt: hnp.arrays(
        np.dtype(dt), hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, max_side=5)))


# --- IDX -----------------------------------------------------------------------------------

_IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


@st.composite
def idx_files(draw) -> tuple[bytes, bool]:
    """(file bytes, gzip-compressed?): a valid IDX array, then maybe damaged."""
    from hypothesis.extra import numpy as hnp

    dtype = draw(st.sampled_from(sorted(_IDX_CODES)))
    array = draw(hnp.arrays(np.dtype(dtype), hnp.array_shapes(min_dims=1, max_dims=3,
                                                             min_side=0, max_side=6)))
    raw = bytes([0, 0, _IDX_CODES[dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape) + array.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    packed = draw(st.booleans())
    if packed and draw(st.booleans()):
        return draw(damaged(gzip.compress(raw))), True  # damage the gzip stream itself
    body = draw(st.one_of(st.just(raw), damaged(raw), st.binary(max_size=40)))
    return (gzip.compress(body) if packed else body), packed


def _check_idx(example, work: Path) -> None:
    from reconad.data import parse_idx, read_idx

    content, packed = example
    path = work / ("x-idx3-ubyte.gz" if packed else "x-idx3-ubyte")
    path.write_bytes(content)
    array = one_line_or_result(lambda: read_idx(path))
    if array is not None:  # the header's shape and the values agree
        assert isinstance(array, np.ndarray) and array.ndim >= 1
    if not packed:
        again = one_line_or_result(lambda: parse_idx(content, "x"))
        assert (again is None) == (array is None)


# --- .npy / .npz ---------------------------------------------------------------------------


@st.composite
def numpy_files(draw) -> tuple[bytes, str]:
    """(file bytes, ".npy" or ".npz"): arrays saved by NumPy, then maybe damaged."""
    suffix = draw(st.sampled_from([".npy", ".npz"]))
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, draw(small_arrays()))
    else:
        keys = st.sampled_from(["x", "images", "y", "labels", "x_test", "y_test", "other"])
        arrays = draw(st.dictionaries(keys, small_arrays(), max_size=4))
        if draw(st.booleans()):
            np.savez_compressed(buffer, **arrays)
        else:
            np.savez(buffer, **arrays)
    valid = buffer.getvalue()
    return draw(st.one_of(st.just(valid), damaged(valid))), suffix


def _check_user_file(example, work: Path) -> None:
    from reconad.data import load_user

    content, suffix = example
    path = work / f"input{suffix}"
    path.write_bytes(content)
    data = one_line_or_result(lambda: load_user(path))
    if data is not None:
        _assert_images(data.x)
        if data.y is not None:
            assert data.y.dtype == np.int64 and data.y.shape == (len(data.x),)


def _assert_images(x: np.ndarray) -> None:
    """Loaded images: (N, 1|3, H, W) in their stored dtype — uint8 (any value is a pixel) or
    float32 in [0, 1] (see reconad.data.stored_images)."""
    assert x.dtype in (np.uint8, np.float32) and x.ndim == 4 and x.shape[1] in (1, 3), (
        x.dtype, x.shape)
    if x.dtype == np.float32:
        assert np.all(np.isfinite(x)) and (x.size == 0 or (x.min() >= 0 and x.max() <= 1))


# --- CSV -----------------------------------------------------------------------------------


@st.composite
def csv_files(draw) -> tuple[bytes, str]:
    """(file bytes, ".csv"): a header and rows of cells, numbers mostly, some junk."""
    side = draw(st.integers(0, 3))
    columns = (["label"] if draw(st.booleans()) else []) + [
        f"p{i}" for i in range(side * side + draw(st.sampled_from([0, 0, 0, 1])))]
    cell = st.one_of(st.integers(-5, 300).map(str), st.floats(-1, 2).map(repr),
                     st.sampled_from(["", "nan", "inf", "cat", '"1"', "1e400", " 3 "]),
                     st.text(alphabet=',"\n\r;. 0123456789abc\x00é', max_size=6))
    rows = draw(st.lists(st.lists(cell, min_size=len(columns), max_size=len(columns)),
                         max_size=5))
    text = "\n".join(",".join(r) for r in [columns, *rows])
    if draw(st.booleans()):
        text = draw(st.text(max_size=60))  # anything at all
    encoded = text.encode("utf-8", "surrogatepass") if text else b""
    return draw(st.one_of(st.just(encoded), damaged(encoded))), ".csv"


# --- image folders -------------------------------------------------------------------------


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    """(file name, bytes): a small image in a Pillow format, maybe damaged, or garbage."""
    from PIL import Image

    fmt, suffix = draw(st.sampled_from([("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"),
                                        ("GIF", ".gif"), ("TIFF", ".tif"), ("PPM", ".pgm")]))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "1", "I;16", "F", "P", "LA", "CMYK"]))
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot hold this mode
        Image.fromarray(pixels).save(buffer, format="PNG")
        suffix = ".png"
    valid = buffer.getvalue()
    content = draw(st.one_of(st.just(valid), damaged(valid), st.binary(max_size=30)))
    return suffix, content


@st.composite
def image_folders(draw) -> list[tuple[str, str, bytes]]:
    """[(class folder or "", file name, bytes)]: unlabelled or class sub-folders."""
    labelled = draw(st.booleans())
    files = draw(st.lists(image_files(), min_size=1, max_size=4))
    return [("abc"[i % 2] if labelled else "", f"im{i}{suffix}", content)
            for i, (suffix, content) in enumerate(files)]


def _check_folder(example, work: Path) -> None:
    from reconad.data import load_user

    root = work / "images"
    for sub, name, content in example:
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / name).write_bytes(content)
    for resize in (None, (4, 4)):
        data = one_line_or_result(lambda r=resize: load_user(root, resize=r))
        if data is not None:
            _assert_images(data.x)
            assert len(data.x) == len(example)


# --- YAML configs and --set strings ---------------------------------------------------------

_SECTIONS = ["data", "scenario", "model", "loss", "train", "score", "threshold", "seed", "name",
             "base", "description"]
_KEYS = ["epochs", "lr", "latent", "kind", "hidden", "normal", "resize", "parts", "quantile",
         "batch_size", "members", "method", "max_train", "dropout", "value"]
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(),
              st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)


@st.composite
def yaml_configs(draw) -> str:
    """YAML text: a mapping of known sections and keys with random values, or any text."""
    import yaml

    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=80))
    tree = draw(st.dictionaries(
        st.sampled_from(_SECTIONS),
        st.one_of(_json_values, st.dictionaries(st.sampled_from(_KEYS), _json_values,
                                                max_size=3)),
        max_size=4))
    return yaml.safe_dump(tree, allow_unicode=True)


def _check_yaml(text: str, work: Path) -> None:
    from reconad.config import load_config

    path = work / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    one_line_or_result(lambda: load_config(path))


_override_text = st.one_of(
    st.tuples(st.sampled_from(_SECTIONS), st.sampled_from(_KEYS), st.text(max_size=12)).map(
        lambda t: f"{t[0]}.{t[1]}={t[2]}"),
    st.tuples(st.sampled_from(_SECTIONS), st.sampled_from(_KEYS), _json_values).map(
        lambda t: f"{t[0]}.{t[1]}={json.dumps(t[2])}"),
    st.text(max_size=20))


def _check_overrides(overrides: list[str], work: Path) -> None:
    from reconad.config import load_config

    one_line_or_result(lambda: load_config("default", overrides))


# --- detector files ------------------------------------------------------------------------


@cache
def _saved_detectors() -> dict[str, bytes]:
    """Bytes of two tiny fitted detectors (plain mse; dense, three score parts + class head)."""
    from reconad.detector import Detector

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 1, 6, 6)).astype(np.float32)
    y = np.repeat([0, 1], 20)
    plain = Detector(model={"kind": "dense", "hidden": [8], "latent": 2},
                     train={"epochs": 1, "batch_size": 20}).fit(x)
    parts = Detector(model={"kind": "dense", "hidden": [8], "latent": 2, "class_head": True},
                     train={"epochs": 1, "batch_size": 20},
                     score={"parts": ["recon", "latent_knn", "class_energy"]}).fit(x, y=y)
    saved = {}
    with tempfile.TemporaryDirectory() as work:
        for name, det in (("plain", plain), ("parts", parts)):
            saved[name] = det.save(Path(work) / f"{name}.safetensors").read_bytes()
    return saved


def _with_header(content: bytes, edit: Callable[[dict], None]) -> bytes:
    """The safetensors file with its reconad JSON header edited (lengths kept consistent)."""
    (length,) = struct.unpack("<Q", content[:8])
    outer = json.loads(content[8 : 8 + length])
    header = json.loads(outer["__metadata__"]["reconad"])
    edit(header)
    outer["__metadata__"]["reconad"] = json.dumps(header)
    packed = json.dumps(outer).encode()
    packed += b" " * (-len(packed) % 8)
    return struct.pack("<Q", len(packed)) + packed + content[8 + length:]


@st.composite
def detector_files(draw) -> bytes:
    """A saved detector: intact, with bytes damaged, or with header values replaced."""
    valid = _saved_detectors()[draw(st.sampled_from(["plain", "parts"]))]
    how = draw(st.sampled_from(["header", "header", "bytes", "intact"]))
    if how == "intact":
        return valid
    if how == "bytes":
        return draw(damaged(valid))
    (length,) = struct.unpack("<Q", valid[:8])
    header = json.loads(json.loads(valid[8 : 8 + length])["__metadata__"]["reconad"])
    paths = _leaf_paths(header)
    edits = draw(st.lists(st.tuples(st.sampled_from(paths), _json_values), min_size=1,
                          max_size=3))

    def edit(tree: dict) -> None:
        for path, value in edits:
            node = tree
            for key in path[:-1]:
                try:  # an earlier edit may have replaced this branch: then skip this edit
                    node = node[key]
                except (IndexError, KeyError, TypeError):
                    return
                if not isinstance(node, dict | list):
                    return
            try:
                node[path[-1]] = value
            except (IndexError, KeyError, TypeError):
                return

    return _with_header(valid, edit)


def _leaf_paths(tree, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a JSON tree (sections too, so whole sections get replaced)."""
    paths = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            paths += _leaf_paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            paths += _leaf_paths(value, (*prefix, i))
    return paths


def _check_detector(content: bytes, work: Path) -> None:
    from reconad.detector import Detector

    path = work / "detector.safetensors"
    path.write_bytes(content)
    det = one_line_or_result(lambda: Detector.load(path))
    if det is None:
        return
    # A loaded detector must score images of its input shape (or refuse them in one line).
    images = np.random.default_rng(0).uniform(0, 1, (3, *det.input_shape_)).astype(np.float32)
    scores = one_line_or_result(lambda: det.anomaly_score(images))
    if scores is not None:
        assert scores.shape == (3,)


TARGETS = {
    "idx": Target("idx", idx_files(), _check_idx),
    "numpy": Target("numpy", numpy_files(), _check_user_file),
    "csv": Target("csv", csv_files(), _check_user_file),
    "image_folder": Target("image_folder", image_folders(), _check_folder),
    "yaml_config": Target("yaml_config", yaml_configs(), _check_yaml),
    "set_overrides": Target("set_overrides", st.lists(_override_text, max_size=4),
                            _check_overrides),
    "detector": Target("detector", detector_files(), _check_detector),
}

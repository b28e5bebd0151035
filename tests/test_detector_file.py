"""Detector files are untrusted input: every hostile or damaged file is refused in one line."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch

from reconad.detector import MAX_HEADER_BYTES, VAL_SCORES_KEY, Detector, digest
from reconad.errors import ReconadError
from reconad.score import BANK_KEY


@pytest.fixture(scope="module")
def saved(tiny_images, tmp_path_factory):
    """A small composite-score detector with a class head, saved once."""
    x, y = tiny_images
    det = Detector(model={"hidden": [32], "latent": 4, "class_head": True},
                   train={"epochs": 1},
                   score={"parts": ["recon", "latent_knn", "class_energy"], "knn_bank": 50},
                   ).fit(x[y < 3], y=y[y < 3])
    return det, det.save(tmp_path_factory.mktemp("saved") / "det.safetensors")


def _read(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["reconad"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return header, tensors


def _rewrite(source, target, header_edit=None, tensor_edit=None):
    """A copy of ``source`` with its header and tensors edited and a *valid* checksum: what
    a deliberate attacker, not a bit flip, would write."""
    from safetensors.torch import save_file

    header, tensors = _read(source)
    if header_edit:
        header_edit(header)
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, str(target), metadata={"reconad": json.dumps(header),
                                              "sha256": digest(tensors)})
    return target


def _refused(path, message):
    with pytest.raises(ReconadError, match=message) as info:
        Detector.load(path)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def _set(key, value):
    return lambda header: header.__setitem__(key, value)


def test_an_unedited_rewrite_loads(saved, tmp_path):
    det, path = saved
    loaded = Detector.load(_rewrite(path, tmp_path / "same.safetensors"))
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.anomaly_score(x), det.anomaly_score(x))


def test_a_huge_header_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" * 64)
    _refused(path, r"header claims \d+ bytes")
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    _refused(path, "header claims")


HEADER_EDITS = [
    (_set("input_shape", [0, 16, 16]), "input_shape"),
    (_set("input_shape", [1, 16]), "input_shape"),
    (_set("input_shape", [1, 10**6, 16]), "input_shape"),
    (_set("input_shape", ["1", 16, 16]), "input_shape"),
    (_set("input_shape", [1, 16.5, 16]), "input_shape"),
    (_set("threshold", math.nan), "threshold"),
    (_set("threshold", math.inf), "threshold"),
    (_set("threshold", "0.1"), "threshold"),
    (_set("threshold_method", "magic"), "threshold_method"),
    (_set("calibration", None), "calibration"),
    (_set("calibration", {"mean": {"recon": 0.0}, "std": {"recon": 1.0}}), "calibration"),
    (lambda h: h["calibration"]["std"].__setitem__("recon", 0.0), "calibration"),
    (lambda h: h["calibration"]["mean"].__setitem__("recon", math.nan), "calibration"),
    (lambda h: h["score"].__setitem__("parts", ["recon", "telepathy"]), "score"),
    (lambda h: h["score"].__setitem__("kind", "psnr"), "score"),
    (_set("classes", [0, 0, 1]), "classes"),
    (_set("classes", []), "classes"),
    (_set("classes", "abc"), "classes"),
    (lambda h: h["model"].__setitem__("class_head", False), "classes"),
    (lambda h: h["model"].__setitem__("kind", "transformer"), "model"),
    (_set("model", None), "model"),
    (_set("loss", {"kind": 3}), "loss"),
    (_set("preprocessing", {"resize": [-1, 5], "grayscale": False}), "preprocessing"),
    (_set("preprocessing", "all of it"), "preprocessing"),
    (_set("history", {"rows": "x"}), "history"),
    (_set("params", {"seed": 1}), "params"),
    (lambda h: h["params"].__setitem__("quantile", 2.0), "params"),
    (_set("format_version", 99), "format version 99"),
    (_set("format_version", True), "format version True"),
    (_set("format", "pytorch"), "not a reconad detector file"),
]


@pytest.mark.parametrize(("edit", "message"), HEADER_EDITS)
def test_invalid_header_fields_are_refused(saved, tmp_path, edit, message):
    _, path = saved
    _refused(_rewrite(path, tmp_path / "bad.safetensors", header_edit=edit), message)


def test_a_huge_declared_model_is_refused_without_building_it(saved, tmp_path):
    _, path = saved
    # 10^5 x 10^5 weights would need 40 GB; the architecture is checked on the meta device.
    bad = _rewrite(path, tmp_path / "huge.safetensors",
                   header_edit=lambda h: h["model"].__setitem__("hidden", [100_000, 100_000]))
    _refused(bad, r"tensor \S+ (of|is) .*the declared model")
    deep = _rewrite(path, tmp_path / "deep.safetensors",
                    header_edit=lambda h: h["model"].__setitem__("hidden", [4] * 5000))
    _refused(deep, "more layers than the file has tensors")


def _first_weight(tensors):
    return next(k for k in sorted(tensors) if k.endswith("weight"))


TENSOR_EDITS = [
    (lambda t: t.pop(_first_weight(t)), "is missing"),
    (lambda t: t.__setitem__("decoder.9.weight", torch.zeros(3)), "not part of the declared model"),
    (lambda t: t.__setitem__("reconad.extra", torch.zeros(3)), "not part of the declared model"),
    (lambda t: t.__setitem__(_first_weight(t), torch.zeros(2, 2)), "the declared model needs"),
    (lambda t: t.__setitem__(_first_weight(t), t[_first_weight(t)].double()),
     "the declared model needs torch.float32"),
    (lambda t: t.pop(BANK_KEY), "without its training codes"),
    (lambda t: t.__setitem__(BANK_KEY, torch.zeros(50, 5)), "latent_knn bank"),
    (lambda t: t.__setitem__(BANK_KEY, torch.zeros(0, 4)), "latent_knn bank"),
    (lambda t: t.__setitem__(BANK_KEY, torch.full((50, 4), math.nan)), "NaN or infinite"),
    (lambda t: t.pop(VAL_SCORES_KEY), VAL_SCORES_KEY),
    (lambda t: t.__setitem__(VAL_SCORES_KEY, torch.zeros(5, dtype=torch.float32)),
     VAL_SCORES_KEY),
]


@pytest.mark.parametrize(("edit", "message"), TENSOR_EDITS)
def test_tensors_that_do_not_fit_the_declared_model_are_refused(saved, tmp_path, edit,
                                                                message):
    _, path = saved
    _refused(_rewrite(path, tmp_path / "bad.safetensors", tensor_edit=edit), message)


def test_a_bank_without_a_latent_knn_part_is_refused(saved, tmp_path):
    _, path = saved

    def recon_only(header):
        header["score"]["parts"] = ["recon", "class_energy"]
        header["calibration"] = {k: {p: v[p] for p in ("recon", "class_energy")}
                                 for k, v in header["calibration"].items()}

    _refused(_rewrite(path, tmp_path / "bad.safetensors", header_edit=recon_only),
             "no latent_knn part")


def test_version_3_files_still_load(saved, tmp_path):
    """Files written before version 4 (no val_scores tensor, history or params) load."""
    det, path = saved

    def as_v3(header):
        header["format_version"] = 3
        del header["history"], header["params"]

    old = _rewrite(path, tmp_path / "v3.safetensors", header_edit=as_v3,
                   tensor_edit=lambda t: t.pop(VAL_SCORES_KEY))
    loaded = Detector.load(old)
    assert loaded.val_scores_ is None and loaded.history_ is None
    assert loaded.threshold_ == det.threshold_ and loaded.classes_ == det.classes_
    x = np.random.default_rng(1).uniform(0, 1, (6, 1, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.anomaly_score(x), det.anomaly_score(x))


def test_version_1_score_kind_string_loads(tmp_path, tiny_images):
    x, _ = tiny_images
    det = Detector(model={"hidden": [16], "latent": 2}, train={"epochs": 1}, score="l1").fit(x)
    path = det.save(tmp_path / "det.safetensors")

    def as_v1(header):
        header.update(format_version=1, score="l1", calibration=None)
        del header["history"], header["params"]

    loaded = Detector.load(_rewrite(path, tmp_path / "v1.safetensors", header_edit=as_v1,
                                    tensor_edit=lambda t: t.pop(VAL_SCORES_KEY)))
    assert loaded.scorer_.config.kind == "l1"
    np.testing.assert_array_equal(loaded.anomaly_score(x[:5]), det.anomaly_score(x[:5]))


def test_version_5_shift_in_pixels_loads_as_the_same_move(tiny_images, tmp_path):
    """Before version 6 score.tta_shift counted pixels; such a file moves its copies as far
    as it did (1 pixel of its 16x16 images = a sixteenth) and scores as it did."""
    x, y = tiny_images
    det = Detector(model={"hidden": [16], "latent": 2}, train={"epochs": 1},
                   score={"tta_shift": 1 / 16}).fit(x[y < 3])
    path = det.save(tmp_path / "det.safetensors")
    assert _read(path)[0]["format_version"] == 6

    def in_pixels(pixels):
        def edit(header):
            header["format_version"] = 5
            header["score"]["tta_shift"] = pixels
        return edit

    loaded = Detector.load(_rewrite(path, tmp_path / "v5.safetensors", in_pixels(1)))
    assert loaded.scorer_.config.tta_shift == 1 / 16
    np.testing.assert_array_equal(loaded.anomaly_score(x[:20]), det.anomaly_score(x[:20]))
    _refused(_rewrite(path, tmp_path / "far.safetensors", in_pixels(5)),
             r"moves its test-time copies 5 pixels, more than 0.25 of its 16x16 images' side")
    _refused(_rewrite(path, tmp_path / "v6.safetensors", _set_score_shift(1)),
             r"damaged or was edited \(header field score is missing or invalid\)")


def _set_score_shift(value):
    return lambda header: header["score"].__setitem__("tta_shift", value)

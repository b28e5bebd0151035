"""ONNX export: onnxruntime's scores and maps equal Detector.anomaly_score / anomaly_maps,
and `reconad export` + `reconad score --engine onnx` give the rows `reconad score` gives.

One tiny detector per shipped preset's kind (the preset's own config, narrowed to a few
units and one epoch on a few hundred images), plus the paths no preset takes (tiled
models, rotation/zoom copies, the other losses and reductions). Each is exported once and
scored by onnxruntime in batches of 1 and 7.

Tolerance: 1e-4 relative, relative to what the compared number is made of:

- a raw score (one part, or a map reduction): relative to itself;
- a calibrated score (a sum of standardised parts, in units of one normal spread, which
  crosses 0) or the reduction of a standardised map: relative to max(|score|, 1), 1e-4 of a
  spread;
- a raw map: relative to max(|value|, 1e-3 x the map's largest value) (a pixel
  reconstructed exactly has no relative error to speak of);
- a standardised map z = mean_k (m_k - mu_k) / sigma_k: relative to
  max(|z|, 1, mean_k |mu_k| / sigma_k), i.e. 1e-4 relative to the raw maps m_k it is made
  of. Standardising subtracts two nearly equal float32 numbers and divides by a small
  spread (sigma can be 3e-4 of the value), so one float32 rounding of m_k is already up to
  2e-4 spreads: torch's own float32 map differs from the float64 one by 5e-4 spreads, more
  than onnxruntime differs from torch (see NOTES.md).
"""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_tool

from reconad.config import load_config
from reconad.data import open_collection, read_idx
from reconad.detector import Detector, detector_to_onnx, onnx_session, read_metadata
from reconad.engines import OnnxDetector, prepare_images, score_onnx
from reconad.errors import ReconadError
from reconad.score import ScoreGraph

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))


@pytest.fixture(scope="module", autouse=True)
def _onnx_installed():
    require_tool(HAVE_ONNX, 'ONNX tests need pip install "reconad[onnx]" (onnx, onnxruntime, '
                            "onnxscript)")

RTOL = 1e-4
BATCHES = (1, 7)
SMALL = ["train.epochs=1", "train.patience=null", "train.batch_size=64"]


def _mnist_dir() -> Path:
    from conftest import _mnist_dir as find

    path = find()
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST not found in {path}; set RECONAD_DATA to the folder with the IDX "
                    "files")
    return path


@cache
def _mnist(n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train uint8 (n, 1, 28, 28), labels (n,), test float32 (7, 1, 28, 28)): a few MNIST
    digits (test images from the test set, anomalies among them)."""
    root = _mnist_dir()
    x = read_idx(root / "train-images-idx3-ubyte.gz")[:n, None]
    y = read_idx(root / "train-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    test = read_idx(root / "t10k-images-idx3-ubyte.gz")[:7, None].astype(np.float32) / 255
    return x, y, test


def _textures(channels: int, side: int, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Random smooth textures (train, 7 test images, some with a flat or bright square)."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, (n + 7, channels, side // 4, side // 4)).astype(np.float32)
    x = torch.nn.functional.interpolate(torch.from_numpy(base), size=(side, side),
                                        mode="bilinear", align_corners=False).numpy()
    x = np.clip(x + rng.normal(0, 0.05, x.shape).astype(np.float32), 0, 1)
    test = x[n:].copy()
    test[1, :, 4:9, 4:9] = 0.5        # flat patch
    test[2, 0, 10:14, 3:8] = 1.0      # a bright mark in one channel
    return x[:n], test


# kind -> (preset, overrides, data); data: "mnist", "mnist-labels" (class head), "rgb",
# "texture"
KINDS: dict[str, tuple[str, list[str], str]] = {
    "default": ("default", ["model.hidden=[32]", "model.latent=8", "score.knn_bank=200"],
                "mnist-labels"),
    "one-class-mnist": ("one-class-mnist", ["model.hidden=[32,16]", "model.latent=4"], "mnist"),
    "conv-rgb": ("conv-rgb", ["model.channels=[4,8,8,4]"], "rgb"),
    "noise-gaussian": ("noise-gaussian", ["model.channels=[4,8]"], "mnist"),
    "contamination": ("contamination-1-3", ["model.hidden=[32,16]"], "mnist"),
    "defects-ssim": ("defects-ssim", ["model.channels=[4,8,4]", "train.crop=16"], "texture"),
    "holdout-4-8": ("holdout-4-8", ["model.hidden=[32,16]"], "mnist"),
    "defects": ("defects", ["model.channels=[4,8]", "train.crop=16", "train.steps=6",
                            "train.epochs=2"], "texture"),
    # paths no preset takes
    "defects-head-only": ("defects", ["model.channels=[4,8,8]", "model.reconstruct=false",
                                      "train.crop=16",
                                      "train.steps=4", "train.epochs=1",
                                      "score.smooth_sigma=0", "score.box=5"], "texture"),
    "tiled-dense-map": ("holdout-4-8", ["model.hidden=[32]", "train.crop=16",
                                        "score.map=absolute", "score.smooth_sigma=1.0",
                                        "score.reduction=max"], "mnist"),
    "tiled-conv-bottleneck-bce": ("noise-gaussian", [
        "model.channels=[4,8]", "model.bottleneck=true", "model.latent=8", "train.crop=16",
        "model.batch_norm=true", "score.kind=bce"], "mnist"),
    "tta-rotation-zoom-knn": ("one-class-mnist", [
        "model.hidden=[32]", "model.latent=4", "model.members=2", "score.parts=[latent_knn]",
        "score.tta_rotation=10", "score.tta_zoom=0.1", "score.knn_k=3"], "mnist"),
    "tta-shift2-recon-ssim": ("holdout-4-8", [
        "model.hidden=[32]", "model.activation=gelu", "model.latent_activation=tanh",
        "model.dropout=0.1", "score.kind=ssim", "score.tta_shift=0.1"], "mnist"),
    "conv-head-knn-energy": ("noise-gaussian", [
        "model.channels=[4,8]", "model.class_head=true", "model.members=2",
        "score.parts=[recon,latent_knn,class_energy]", "score.tta_shift=0.05",
        "score.knn_bank=100"], "mnist-labels"),
    "conv-maxpool-upsample-map": ("noise-gaussian", [
        "model.channels=[4,8,4]", "model.downsample=maxpool", "model.upsample=upsample",
        "model.activation=elu", "score.map=squared+ssim", "score.standardize=true",
        "score.reduction=mean", "score.smooth_sigma=1.5", "score.ssim_window=7"], "mnist"),
}


@cache
def _fitted(kind: str) -> tuple[Detector, np.ndarray]:
    """The tiny detector of ``kind`` and 7 test images."""
    preset, overrides, data = KINDS[kind]
    cfg = load_config(preset, [*SMALL, *overrides])
    det = Detector(model=cfg.model.model_dump(), loss=cfg.loss.model_dump(),
                   train=cfg.train.model_dump(), score=cfg.score.model_dump(),
                   quantile=0.9, val_fraction=0.2, seed=0, device="cpu")
    torch.manual_seed(0)
    if data.startswith("mnist"):
        x, y, test = _mnist()
        det.fit(x, y if data == "mnist-labels" else None)
    elif data == "rgb":
        x, test = _textures(3, 20)  # 20 pixels: padded to 32 by the 4 stride-2 stages
        det.fit(x)
    else:
        x, test = _textures(3, 24)
        det.fit(x)
    return det, test


@cache
def _reference(kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Detector.anomaly_score (and anomaly_maps for a map detector) of the 7 test images,
    computed once: reconad's scores do not depend on the batch (fixed-size passes), so the
    first n of them are the scores of the first n images."""
    det, test = _fitted(kind)
    if det.scorer_.config.map != "none":
        maps, scores = det.anomaly_maps_and_scores(test)
        return scores, maps
    return det.anomaly_score(test), None


@cache
def _exported(kind: str, tmp: str):
    det, test = _fitted(kind)
    path = detector_to_onnx(det, Path(tmp) / f"{kind}.onnx")
    return det, test, onnx_session(path, threads=1), path


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("onnx"))


def rel_diff(got: np.ndarray, want: np.ndarray, floor: float) -> float:
    """max |got - want| / max(|want|, floor)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float((np.abs(got - want) / np.maximum(np.abs(want), floor)).max())


def _score_floor(det: Detector) -> float:
    scorer = det.scorer_
    return 1.0 if scorer.calibration is not None or scorer.normalizers is not None else 1e-30


def _map_floor(det: Detector, maps: np.ndarray) -> float | np.ndarray:
    """Per pixel: what a difference of ``maps`` (the detector's) is measured against."""
    normalizers = det.scorer_.normalizers
    if normalizers is None:
        return 1e-3 * float(np.abs(maps).max())
    ratio = np.mean([(n.mean_.abs() / n.std_).numpy() for n in normalizers.values()], axis=0)
    return np.maximum(ratio, 1.0)  # (H, W), broadcast over the images


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_onnx_scores_equal_detector(kind: str, n: int, tmp_dir: str) -> None:
    det, test, session, _ = _exported(kind, tmp_dir)
    want, want_maps = _reference(kind)
    x, want = test[:n], want[:n]
    got = score_onnx(session, x)
    assert got.shape == (n,) and got.dtype == np.float32
    assert np.isfinite(got).all()
    assert rel_diff(got, want, _score_floor(det)) < RTOL
    if want_maps is not None:
        want_maps = want_maps[:n]
        got_score, got_maps = score_onnx(session, x, maps=True)
        assert np.array_equal(got_score, got)
        assert got_maps.shape == want_maps.shape == (n, *det.image_shape_[1:])
        assert rel_diff(got_maps, want_maps, _map_floor(det, want_maps)) < RTOL


def test_graph_has_dynamic_batch_and_metadata(tmp_dir: str) -> None:
    det, test, session, path = _exported("default", tmp_dir)
    (inp,) = session.get_inputs()
    assert inp.name == "images" and isinstance(inp.shape[0], str)
    assert inp.shape[1:] == list(det.image_shape_)
    assert [o.name for o in session.get_outputs()] == ["score"]
    meta = read_metadata(path)
    assert meta["image_shape"] == list(det.image_shape_)
    assert meta["threshold"] == det.threshold_
    assert meta["preprocessing"] == det.preprocessing_
    # flags agree with the detector's
    want, _ = _reference("default")
    flags = score_onnx(session, test) > meta["threshold"]
    near = np.abs(want - det.threshold_) < 1e-4  # a flag may flip only at the threshold
    assert np.array_equal(flags[~near], (want > det.threshold_)[~near])


def test_maps_output_for_a_score_detector(tmp_dir: str) -> None:
    """maps=True adds the score.kind error map (Detector.anomaly_maps) to any detector."""
    det, test = _fitted("one-class-mnist")
    path = detector_to_onnx(det, Path(tmp_dir) / "with-maps.onnx", maps=True)
    score, maps = score_onnx(path, test, maps=True)
    want = det.anomaly_maps(test)
    assert rel_diff(maps, want, _map_floor(det, want)) < RTOL
    assert rel_diff(score, _reference("one-class-mnist")[0], _score_floor(det)) < RTOL


@pytest.mark.parametrize("kind", ["default", "defects-ssim"])
def test_torchscript_exporter_gives_the_same_scores(kind: str, tmp_dir: str) -> None:
    """The deprecated exporter (dynamo=False) still works and agrees, batch 7 and 1."""
    det, test = _fitted(kind)
    path = detector_to_onnx(det, Path(tmp_dir) / f"{kind}-torchscript.onnx", dynamo=False)
    want, _ = _reference(kind)
    for n in BATCHES:
        got = score_onnx(path, test[:n])
        assert rel_diff(got, want[:n], _score_floor(det)) < RTOL


def test_torch_graph_equals_detector() -> None:
    """ScoreGraph itself (before export) reproduces the detector: the reference for
    debugging an exporter difference."""
    det, test = _fitted("default")
    with torch.no_grad():
        got = ScoreGraph(det)(torch.from_numpy(test)).numpy()
    assert rel_diff(got, _reference("default")[0], 1.0) < RTOL


def test_prepare_images_applies_stored_preprocessing(tmp_dir: str) -> None:
    """Image files are resized / greyed as the detector's preprocessing says, from the
    ONNX file's metadata alone, exactly as `reconad score` prepares them."""
    from PIL import Image

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (40, 1, 12, 12)).astype(np.float32)
    det = Detector(model={"kind": "dense", "hidden": [8], "latent": 2},
                   train={"epochs": 1, "batch_size": 16, "patience": None}, device="cpu")
    det.fit(x, preprocessing={"resize": [12, 12], "grayscale": True})
    path = detector_to_onnx(det, Path(tmp_dir) / "prep.onnx")
    folder = Path(tmp_dir) / "pictures"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        rgb = (rng.uniform(0, 1, (20, 17, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{i}.png")
    got = prepare_images(folder, path)
    assert got.shape == (3, 1, 12, 12) and got.dtype == np.float32
    coll = open_collection(folder, det.image_shape_, resize=(12, 12), grayscale=True)
    want = coll.batch(np.arange(3)).x
    assert np.array_equal(got, want)
    assert np.array_equal(prepare_images(folder, det), got)
    assert rel_diff(score_onnx(path, got), det.anomaly_score(got), 1e-30) < RTOL


def test_old_opset_refused(tmp_dir: str) -> None:
    det, _ = _fitted("holdout-4-8")
    with pytest.raises(ReconadError, match="opset"):
        detector_to_onnx(det, Path(tmp_dir) / "old.onnx", opset=13)


@pytest.mark.parametrize("dynamo", [True, False])
def test_a_graph_that_fixed_its_batch_size_is_refused(dynamo: bool, tmp_dir: str,
                                                      monkeypatch) -> None:
    """A model that reshapes with view(len(z), ...): both exporters turn len(z) into the
    example's batch size without an error (TorchScript: a constant in a Reshape; dynamo: a
    specialised input). The export check catches it."""
    real = ScoreGraph._decode

    def decode_with_a_fixed_batch(self, codes):
        out = real(self, codes)
        return out.reshape(len(out), -1).view(len(out), *out.shape[1:])  # len(): traced as a number

    monkeypatch.setattr(ScoreGraph, "_decode", decode_with_a_fixed_batch)
    det, _ = _fitted("one-class-mnist")
    with pytest.raises(ReconadError, match="batch"):
        detector_to_onnx(det, Path(tmp_dir) / f"fixed-{dynamo}.onnx", dynamo=dynamo)


# --------------------------------------------------------------------------- the commands


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconad", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("kind", ["default", "defects-ssim"])
def test_export_then_score_with_the_onnx_engine_gives_reconad_scores_rows(kind, tmp_dir):
    """`reconad export` writes the graph; `reconad score FILE.onnx --engine onnx` writes the
    rows `reconad score` writes (ids, labels, flags; scores to 1e-4), also straight from the
    detector file (exported on the fly), and the heat-maps of --maps (exported with --maps;
    without it a score detector's graph has no map, and --maps says so)."""
    det, test = _fitted(kind)
    folder = Path(tmp_dir) / f"cli-{kind}"
    folder.mkdir()
    det_path = det.save(folder / "det.safetensors")
    np.save(folder / "x.npy", test)
    onnx_path = folder / "det.onnx"
    done = _cli("export", str(det_path), "--format", "onnx", "--out", str(onnx_path), "--maps")
    assert done.returncode == 0, done.stderr
    assert "ONNX graph written" in done.stdout and onnx_path.is_file()
    assert not list(folder.glob(".*partial*"))
    want = _cli("score", str(det_path), str(folder / "x.npy"), "--out", str(folder / "t.csv"))
    assert want.returncode == 0, want.stderr
    expected = _rows(folder / "t.csv")
    for source, name in ((onnx_path, "o.csv"), (det_path, "s.csv")):
        got = _cli("score", str(source), str(folder / "x.npy"), "--engine", "onnx",
                   "--out", str(folder / name), "--maps", str(folder / f"maps-{name}"))
        assert got.returncode == 0, got.stderr
        rows = _rows(folder / name)
        assert [r["id"] for r in rows] == [r["id"] for r in expected]
        scores = np.array([float(r["score"]) for r in rows])
        reference = np.array([float(r["score"]) for r in expected])
        assert rel_diff(scores, reference, _score_floor(det)) < RTOL
        near = np.abs(reference - det.threshold_) < 1e-4
        assert ([r["flag"] for r, n in zip(rows, near, strict=True) if not n]
                == [r["flag"] for r, n in zip(expected, near, strict=True) if not n])
        assert len(list((folder / f"maps-{name}").glob("*.png"))) == len(test)
    if det.scorer_.config.map == "none":
        plain = folder / "plain.onnx"
        assert _cli("export", str(det_path), "--out", str(plain)).returncode == 0
        refused = _cli("score", str(plain), str(folder / "x.npy"), "--engine", "onnx",
                       "--maps", str(folder / "none"))
        assert refused.returncode == 2 and "export it with --maps" in refused.stderr


def test_onnx_detector_answers_like_the_detector(tmp_dir):
    det, test = _fitted("defects-ssim")
    graph = OnnxDetector(detector_to_onnx(det, Path(tmp_dir) / "adapter.onnx"))
    assert graph.image_shape_ == det.image_shape_ and graph.threshold_ == det.threshold_
    want_maps, want = det.anomaly_maps_and_scores(test)
    maps, scores = graph.anomaly_maps_and_scores(test)
    assert scores.dtype == np.float64 and maps.shape == want_maps.shape
    assert rel_diff(scores, want, _score_floor(det)) < RTOL
    with pytest.raises(ReconadError, match="shape"):
        graph.anomaly_score(test[:, :, :8, :8])


def test_bad_onnx_inputs_are_one_line_errors(tmp_path):
    det, test = _fitted("holdout-4-8")
    with pytest.raises(ReconadError, match="does not exist"):
        OnnxDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph at all")
    with pytest.raises(ReconadError, match="not an ONNX file"):
        OnnxDetector(tmp_path / "junk.onnx")
    det_path = det.save(tmp_path / "det.safetensors")
    np.save(tmp_path / "x.npy", test)
    wrong = _cli("score", str(tmp_path / "junk.onnx"), str(tmp_path / "x.npy"))
    assert wrong.returncode == 2 and "--engine onnx" in wrong.stderr
    bad = _cli("export", str(det_path), "--format", "tflite", "--out", str(tmp_path / "a.x"))
    assert bad.returncode == 2 and "the one format is onnx" in bad.stderr
    assert "Traceback" not in wrong.stderr + bad.stderr


def test_without_the_extra_the_error_names_it(tmp_path, monkeypatch):
    det, _ = _fitted("holdout-4-8")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(ReconadError, match=r'pip install "reconad\[onnx\]"'):
        det.to_onnx(tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()

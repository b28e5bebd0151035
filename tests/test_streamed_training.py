"""data.stream: training and scoring read batches from disk and give what in-memory runs give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import assert_close

import reconad.data._streamed as streamed
import reconad.pipeline as pipeline
from reconad.config import DataConfig, LossConfig, ModelConfig, TrainConfig, load_config
from reconad.data import ImageRows, load_dataset, read_idx
from reconad.errors import ReconadError
from reconad.models import build_model
from reconad.train import fit_model

QUICK = ["train.epochs=2", "train.batch_size=64", "train.threads=1", "model.kind=dense",
         "model.hidden=[64]", "model.latent=8", "model.class_head=false",
         "score.parts=[recon,latent_knn]"]


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """500 real MNIST training digits, uint8 (N, 28, 28), and their labels."""
    x = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")[:500]
    y = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")[:500].astype(np.int64)
    return x, y


def test_image_rows_read_in_the_asked_order_and_select_lazily(tmp_path):
    stored = np.arange(5 * 4, dtype=np.uint8).reshape(5, 1, 2, 2)
    np.save(tmp_path / "a.npy", stored)
    rows = ImageRows(np.load(tmp_path / "a.npy", mmap_mode="r"))
    part = rows[np.array([4, 0, 2])][1:]  # views of views: rows 0 and 2
    assert part.shape == (2, 1, 2, 2) and isinstance(part, ImageRows)
    np.testing.assert_array_equal(np.asarray(part), stored[[0, 2]])
    np.testing.assert_array_equal(np.asarray(rows[3:5].concat(rows[:1])), stored[[3, 4, 0]])


def test_fit_from_a_memory_map_equals_fit_in_memory(tmp_path, digits):
    x = digits[0][:, None]
    np.save(tmp_path / "d.npy", x)
    mapped = np.load(tmp_path / "d.npy", mmap_mode="r")
    histories = []
    for train_x, val_x in ((x[:400], x[400:]), (ImageRows(mapped)[:400], mapped[400:])):
        torch.manual_seed(0)  # the same initial weights
        model = build_model(ModelConfig(kind="dense", hidden=[32], latent=4), (1, 28, 28))
        histories.append(fit_model(model, train_x, val_x, LossConfig(),
                                   TrainConfig(epochs=2, batch_size=64, threads=1), seed=0,
                                   progress=False))
    memory, disk = histories
    assert len(memory.rows) == len(disk.rows) == 2
    for a, b in zip(memory.rows, disk.rows, strict=True):
        assert_close(b["train_loss"], a["train_loss"], what="train loss")
        assert_close(b["val_loss"], a["val_loss"], what="val loss")


def _save_folder(root, x, y):
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{i:04d}.png")


@pytest.mark.parametrize("layout", ["npy", "folder"])
def test_streamed_run_matches_in_memory_run(tmp_path, digits, layout):
    x, y = digits
    if layout == "npy":  # unlabelled: corrupted copies are the anomalies
        source = tmp_path / "digits.npy"
        np.save(source, x)
        scenario = ["scenario.kind=corruption", "scenario.noise=gaussian",
                    "scenario.noise_level=0.3"]
    else:  # class folders: 8s are the development anomalies, 4s the evaluation ones
        source = tmp_path / "digits"
        _save_folder(source, x, y)
        scenario = ["scenario.kind=holdout"]
    runs = {}
    for stream in ("true", "false"):
        cfg = load_config("default", [*QUICK, *scenario, f"data.source={source}",
                                      f"data.stream={stream}"])
        runs[stream] = pipeline.run(cfg, progress=False, write=False)
    on, off = runs["true"], runs["false"]
    assert on.metrics["training"]["epochs_run"] == off.metrics["training"]["epochs_run"] == 2
    assert abs(on.metrics["dev"]["auroc"] - off.metrics["dev"]["auroc"]) <= 0.002
    assert abs(on.metrics["eval"]["auroc"] - off.metrics["eval"]["auroc"]) <= 0.002
    assert on.sizes == off.sizes


def test_streamed_dataset_holds_no_pixels(tmp_path, digits):
    np.save(tmp_path / "d.npy", digits[0])
    data = load_dataset(DataConfig(source=str(tmp_path / "d.npy"), stream=True), seed=0)
    assert isinstance(data.train_x, ImageRows) and isinstance(data.test_x, ImageRows)
    assert len(data.train_x) + len(data.test_x) == 500 and data.image_shape == (1, 28, 28)
    assert data.train_x.dtype == np.uint8


def test_auto_streams_only_what_does_not_fit(tmp_path, digits, monkeypatch):
    np.save(tmp_path / "d.npy", digits[0])  # 500 * 784 * 4 bytes = 1.5 MB as float32
    cfg = DataConfig(source=str(tmp_path / "d.npy"))
    assert cfg.stream == "auto"
    assert not isinstance(load_dataset(cfg, seed=0).train_x, ImageRows)
    monkeypatch.setattr(streamed, "memory_budget", lambda: 1_000_000)
    assert isinstance(load_dataset(cfg, seed=0).train_x, ImageRows)


def test_stream_true_on_a_source_read_whole_names_the_fix(mnist_dir):
    with pytest.raises(ReconadError, match="data.stream=true.*np.save"):
        load_dataset(DataConfig(source="mnist", data_dir=str(mnist_dir), stream=True), seed=0)

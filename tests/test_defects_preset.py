"""The `defects` preset: simulated anomalies with exact masks, a segmenting head that learns,
a mixed-size folder run with no other setting, the detector saved and loaded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from reconad.config import load_config
from reconad.detector import Detector
from reconad.models import SegmentingAutoencoder
from reconad.train import Checkpoint, fit_segmenting, focal_loss
from reconad.transforms import FILLS, paste_anomaly, simulate_anomalies

TINY = ["train.steps=4", "train.epochs=2"]


def _textured(seed: int, shape=(1, 48, 48)) -> np.ndarray:
    """A smooth random texture in [0.2, 0.8] (every fill changes such an image)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0.2, 0.8, (1, shape[0], 8, 8)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=shape[1:], mode="bilinear")[0]
    return np.clip(fine.numpy() + rng.normal(0, 0.03, shape).astype(np.float32), 0.2, 0.8)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("channels", [1, 3])
def test_simulated_anomaly_changes_exactly_its_mask(fill, channels):
    x, other = _textured(0, (channels, 48, 48)), _textured(1, (channels, 48, 48))
    for seed in range(5):
        out, mask = paste_anomaly(x, other, np.random.default_rng(seed), fill)
        assert out.dtype == np.float32 and out.shape == x.shape
        assert mask.dtype == bool and mask.shape == x.shape[1:] and mask.any()
        assert np.array_equal(out[:, ~mask], x[:, ~mask])  # bit for bit outside
        assert np.abs(out[:, mask] - x[:, mask]).mean() > 1e-3  # the region changed
        assert 0 <= out.min() and out.max() <= 1


def test_simulated_batch_masks_are_binary_and_seeded():
    images = np.stack([_textured(i) for i in range(16)])

    def draw(seed):
        return simulate_anomalies(images, images, np.random.default_rng(seed), 0.5)

    (a, ma), (b, mb) = draw(3), draw(3)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert set(np.unique(ma).tolist()) == {0.0, 1.0}
    hit = ma.reshape(len(ma), -1).any(axis=1)
    assert 0 < hit.sum() < len(hit)  # some images have an anomaly, some not
    assert np.array_equal(a[~hit], images[~hit])  # the others are returned unchanged
    unchanged = (a == images).all(axis=1)
    assert unchanged[ma == 0].all()
    assert not np.array_equal(draw(4)[1], ma)


def _squares(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 noise, half of the images with a bright 4x4 square; its mask."""
    x = rng.uniform(0, 0.5, (n, 1, 16, 16)).astype(np.float32)
    m = np.zeros((n, 1, 16, 16), np.float32)
    for i in range(0, n, 2):
        y0, x0 = rng.integers(0, 12, 2)
        x[i, 0, y0:y0 + 4, x0:x0 + 4] = 1.0
        m[i, 0, y0:y0 + 4, x0:x0 + 4] = 1.0
    return torch.from_numpy(x), torch.from_numpy(m)


def _pixel_auroc(model, x, m) -> float:
    model.eval()
    with torch.no_grad():
        p = torch.sigmoid(model.segment(x))
    return roc_auc_score(m.flatten().numpy(), p.flatten().numpy())


def test_head_learns_a_separable_case():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = SegmentingAutoencoder((1, 16, 16), channels=[8, 16], reconstruct=False)
    test_x, test_m = _squares(32, np.random.default_rng(99))
    before = _pixel_auroc(model, test_x, test_m)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        x, m = _squares(16, rng)
        loss = focal_loss(model.segment(x), m)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _pixel_auroc(model, test_x, test_m)
    assert after > 0.9, (before, after)
    assert after - before > 0.2, (before, after)


def test_fit_segmenting_is_seeded_and_resumes_exactly(tmp_path, monkeypatch):
    images = np.stack([_textured(i, (1, 32, 32)) for i in range(12)])
    cfg = load_config("defects", ["model.channels=[4,8]", "train.crop=16", "train.steps=6",
                                  "train.epochs=3", "train.batch_size=4", "train.threads=1"])

    def fit(checkpoint=None):
        torch.manual_seed(0)
        model = SegmentingAutoencoder((1, 16, 16), [4, 8])
        history = fit_segmenting(model, images, None, cfg.loss, cfg.train, seed=0,
                                 progress=False, checkpoint=checkpoint)
        return model, history

    a, history = fit()
    b, _ = fit()
    assert len(history.rows) == 3 and history.best_epoch == 3
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key

    # Ctrl-C right after the first round's checkpoint, then a resumed run
    save = Checkpoint.save

    def save_then_stop(self, path):
        save(self, path)
        raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.pt"
    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    _, stopped = fit(ckpt)
    assert stopped.interrupted and len(stopped.rows) == 1
    monkeypatch.setattr(Checkpoint, "save", save)
    c, resumed = fit(ckpt)
    assert resumed.resumed_after == 1 and len(resumed.rows) == 3
    for key, value in a.state_dict().items():
        assert torch.equal(value, c.state_dict()[key]), key


def _fitted_detector() -> tuple[Detector, np.ndarray]:
    cfg = load_config("defects", ["model.channels=[4,8]", "train.crop=16", *TINY])
    images = np.stack([_textured(i, (1, 32, 32)) for i in range(20)])
    det = Detector(model=cfg.model.model_dump(), loss=cfg.loss.model_dump(),
                   train=cfg.train.model_dump(), score=cfg.score.model_dump(),
                   quantile=0.9, val_fraction=0.2, seed=0, device="cpu").fit(images)
    test = np.stack([_textured(100 + i, (1, 32, 32)) for i in range(5)])
    test[1, :, 5:12, 5:12] = 1.0
    return det, test


def test_detector_round_trips_scores_and_maps(tmp_path):
    det, test = _fitted_detector()
    maps, scores = det.anomaly_maps_and_scores(test)
    assert maps.shape == (5, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert np.allclose(scores, det.anomaly_score(test))
    loaded = Detector.load(det.save(tmp_path / "d.safetensors"))
    assert np.array_equal(loaded.anomaly_score(test), det.anomaly_score(test))
    assert np.array_equal(loaded.anomaly_maps(test), maps)
    assert loaded.reconstruct(test).shape == test.shape


def test_config_ties_segment_map_to_draem_model():
    from reconad.errors import ReconadError

    with pytest.raises(ReconadError, match="go together"):
        load_config("defects", ["model.kind=conv"])
    with pytest.raises(ReconadError, match="must be odd"):
        load_config("defects", ["score.box=4"])


@pytest.mark.parametrize("override, match", [
    ("model.members=2", "one model without a class head"),
    ("train.denoise=patch", "train.denoise do not apply"),
    ("train.augment_rotation=10", "train.augment_rotation do not apply"),
])
def test_settings_a_draem_model_cannot_use_are_refused(override, match):
    from reconad.errors import ReconadError

    cfg = load_config("defects", ["model.channels=[4,8]", "train.crop=16", *TINY, override])
    det = Detector(model=cfg.model.model_dump(), loss=cfg.loss.model_dump(),
                   train=cfg.train.model_dump(), score=cfg.score.model_dump(), device="cpu")
    with pytest.raises(ReconadError, match=match):
        det.fit(np.stack([_textured(i, (1, 32, 32)) for i in range(8)]))


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Grey PNGs of four sizes and one colour JPEG-like PNG, directly in one folder."""
    root = tmp_path_factory.mktemp("mixed") / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 50), (64, 64), (100, 80), (72, 90)] * 3):
        pixels = (rng.uniform(0.3, 0.7, (h, w)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"grey{i:02d}.png")
    Image.fromarray((rng.uniform(0, 1, (60, 70, 3)) * 255).astype(np.uint8)).save(
        root / "colour.png")
    return root


def test_cli_runs_on_a_mixed_size_folder_with_no_other_setting(mixed_folder, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "reconad", "run", "defects", "--set",
         f"data.source={mixed_folder}", *[a for s in TINY for a in ("--set", s)],
         "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["name"] == "defects" and metrics["training"]["epochs_run"] == 2
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    ids = {r["id"] for r in rows}
    assert ids and all(i.endswith(".png") for i in ids)
    assert ids <= {p.name for p in mixed_folder.iterdir()}
    scored = subprocess.run(
        [sys.executable, "-m", "reconad", "score", str(out / "detector.safetensors"),
         str(mixed_folder), "--out", str(tmp_path / "s.csv"), "--maps", str(tmp_path / "maps")],
        capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr
    assert len(list((tmp_path / "maps").glob("*.png"))) == 13


def test_mvtec_layout_of_mixed_sizes_runs_with_only_its_source(tmp_path):
    from reconad.pipeline import run

    root = tmp_path / "tiles"
    rng = np.random.default_rng(1)
    sizes = [(40, 50), (64, 64), (100, 80), (72, 90)]
    for folder, n in (("train/good", 12), ("test/good", 3), ("test/crack", 3)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            h, w = sizes[i % 4]
            pixels = (rng.uniform(0.3, 0.7, (h, w)) * 255).astype(np.uint8)
            if folder == "test/crack":
                mask = np.zeros((h, w), np.uint8)
                mask[h // 3:h // 2, 5:w - 5] = 255
                pixels[mask > 0] = 10
                (root / "ground_truth/crack").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / "ground_truth/crack" / f"{i:03d}_mask.png")
            Image.fromarray(pixels).save(root / folder / f"{i:03d}.png")
    config = load_config("defects", [f"data.source={root}", *TINY])
    result = run(config, tmp_path / "run", progress=False)
    loc = result.metrics["eval"]["localization"]
    assert 0 <= loc["pixel_auroc"] <= 1 and loc["n_images"] == 6
    assert result.detector.image_shape_ == (1, 128, 128)
    assert (tmp_path / "run" / "report.html").is_file()

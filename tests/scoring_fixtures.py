"""A tiny saved detector and generated image collections for the `reconad score` tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 16  # the detector's images: 1 x 16 x 16


def train_tiny_detector(folder: Path) -> Path:
    """Fit a one-epoch dense AE on 300 generated 1x16x16 images; save it; return the path."""
    from reconad.detector import Detector

    rng = np.random.default_rng(0)
    x = (rng.random((300, 1, SIDE, SIDE)) * 60).astype(np.uint8)
    x[:, :, 6:9, 2:14] = 220  # a bright bar: what "normal" looks like
    det = Detector(model={"hidden": [32], "latent": 4}, train={"epochs": 1}, seed=0).fit(x)
    return det.save(folder / "detector.safetensors")


def image_folder(root: Path, n_per_class: int = 12, side: int = 20, seed: int = 1) -> Path:
    """Class folders ``bad/`` and ``good/`` (with a nested ``good/more/``) of grey PNGs."""
    rng = np.random.default_rng(seed)
    for name in ("bad", "good", "good/more"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = (rng.random((side, side)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root

"""reconad next to PyOD and a supervised classifier on the same held-out 4/8 splits.

Splits: ``reconad.data.load_dataset`` + ``reconad.scenarios.make_splits`` with the ``default``
preset's scenario (normal = 0,1,2,3,5,6,7,9; dev anomalies 8s, eval anomalies 4s). Every
method is fitted on the same normal training images and judged the same way: AUROC on dev and
eval, and eval precision/recall/F1 at the Youden threshold chosen on dev.

- reconad (default): the ``default`` preset's detector (class head, composite score).
- reconad fast: one autoencoder of the same kind, no augmentation, 1 epoch (time to quality
  against PyOD's fit).
- reconad plain AE: PyOD's architecture (784-512-256-10-256-512-784), reconstruction error
  only, batch 256, 20 epochs: the training-speed comparison at the same work per epoch.
  reconad fit time is ``Detector.fit`` (training, plus the kNN bank and calibration).
- PyOD AutoEncoder, hidden_neuron_list [512, 256, 10] (784-512-256-10-256-512-784, ReLU, as
  protocol 1), batch 256, 20 epochs, otherwise PyOD's defaults (standardised inputs, batch norm,
  dropout 0.2, Adam 1e-3), and the same with ``preprocessing=False`` (raw pixels: PyOD's
  z-scoring of constant border pixels blows its scores up); PyOD PCA (95 % of the variance,
  see below), KNN (k=5, largest), IForest with their defaults.
  Per-epoch time of the PyOD AutoEncoder is its training loop alone (its own ``train`` method
  timed), fit time includes PyOD's scaling and scoring of the training set.
- supervised CNN (protocol 2's reference): trained with anomaly labels on the normal training
  images (0) and the training images of the dev anomaly class 8 (1); it has seen 8s, never 4s.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from reconad.config import ThresholdConfig
from reconad.data import float_batch, load_dataset
from reconad.detector import Detector
from reconad.evaluation import evaluate_sets
from reconad.scenarios import make_splits

from .common import Context, at, bar_plot, evaluate_detector, mean_std

# one autoencoder, trained on the images as they are (no ensemble, no augmentation)
ONE_PLAIN_AE = ["model.members=1", "train.augment_rotation=0", "train.augment_shift=0",
                "train.augment_zoom=0"]
RECONAD = {  # label: overrides of the default preset
    "reconad (default)": [],
    "reconad fast (1 epoch)": [*ONE_PLAIN_AE, "train.epochs=1"],
    "reconad plain AE (PyOD's architecture)": [
        *ONE_PLAIN_AE, "model.latent=10", "model.class_head=false", "score.parts=[recon]",
        "score.complexity=none", "train.epochs=20"],
}

YOUDEN = ThresholdConfig(method="youden")
PYOD_AE_ROWS = ("PyOD AutoEncoder", "PyOD AutoEncoder (raw pixels)")


def _row(method: str, seed: int, metrics: dict, fit_seconds: float,
         seconds_per_epoch: float | None = None, epochs: int | None = None) -> dict:
    ev = metrics["eval"]
    return {"method": method, "seed": seed, "dev_auroc": metrics["dev"]["auroc"],
            "eval_auroc": ev["auroc"], "eval_precision": at(ev, "youden", "precision"),
            "eval_recall": at(ev, "youden", "recall"), "eval_f1": at(ev, "youden", "f1"),
            "fit_seconds": fit_seconds, "seconds_per_epoch": seconds_per_epoch,
            "epochs": epochs}


def _flat(x: np.ndarray) -> np.ndarray:
    return float_batch(x).reshape(len(x), -1)  # (N, C*H*W) float32 in [0, 1] for PyOD


def _pyod_models(quick: bool, seed: int) -> dict:
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.pca import PCA

    return {
        "PyOD AutoEncoder": AutoEncoder(hidden_neuron_list=[512, 256, 10], batch_size=256,
                                        epoch_num=2 if quick else 20, random_state=seed,
                                        verbose=0),
        # its default z-scores every pixel: the constant border pixels blow scores up
        "PyOD AutoEncoder (raw pixels)": AutoEncoder(
            hidden_neuron_list=[512, 256, 10], batch_size=256, epoch_num=2 if quick else 20,
            random_state=seed, verbose=0, preprocessing=False),
        # PyOD's default keeps all 784 components; those of the always-black border pixels
        # have zero variance and its weighted distance divides by them (every score infinite).
        # Keeping 95 % of the variance is the smallest change that gives finite scores.
        "PyOD PCA": PCA(n_components=0.95, random_state=seed),
        "PyOD KNN": KNN(),
        "PyOD IForest": IForest(random_state=seed),
    }


def _fit_pyod(name: str, model, splits, seed: int) -> dict:
    loop: list[float] = []
    if hasattr(model, "epoch_num"):  # time PyOD's training loop alone
        inner = model.train

        def timed(loader):
            start = time.perf_counter()
            inner(loader)
            loop.append(time.perf_counter() - start)

        model.train = timed
    start = time.perf_counter()
    model.fit(_flat(splits.train))
    fit_seconds = time.perf_counter() - start
    scores = {n: model.decision_function(_flat(s.x)) for n, s in splits.sets.items()}
    metrics = evaluate_sets(scores, splits, model.decision_function(_flat(splits.val)),
                            YOUDEN)[1]
    epochs = getattr(model, "epoch_num", None)
    return _row(name, seed, metrics, fit_seconds, loop[0] / epochs if loop else None, epochs)


class SmallCNN(nn.Module):
    """(B, 1, 28, 28) -> anomaly logit (B,): two strided convs and a linear layer."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),  # (B, 32, 7, 7)
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def _fit_reconad(label: str, cfg, splits, seed: int) -> dict:
    detector = Detector(model=cfg.model, loss=cfg.loss, train=cfg.train, score=cfg.score,
                        quantile=cfg.threshold.quantile, seed=seed)
    start = time.perf_counter()
    detector.fit(splits.train, y=splits.train_labels if cfg.model.class_head else None,
                 X_val=splits.val)
    fit_seconds = time.perf_counter() - start
    history = detector.history_.rows
    return _row(label, seed, evaluate_detector(detector, splits, YOUDEN), fit_seconds,
                float(np.mean([r["seconds"] for r in history])), len(history))


def _supervised_cnn(dataset, splits, anomaly_classes: list[int], seed: int, epochs: int) -> dict:
    anomalies = dataset.train_x[np.isin(dataset.train_y, anomaly_classes)]
    x = torch.from_numpy(float_batch(np.concatenate([splits.train, anomalies])))
    y = torch.cat([torch.zeros(len(splits.train)), torch.ones(len(anomalies))])
    torch.manual_seed(seed)
    model = SmallCNN(x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(128):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
    fit_seconds = time.perf_counter() - start
    model.eval()

    @torch.no_grad()
    def score(images: np.ndarray) -> np.ndarray:  # (N,) logit: higher = more anomalous
        return torch.cat([model(b) for b in torch.from_numpy(float_batch(images)).split(2048)]
                         ).numpy()

    scores = {n: score(s.x) for n, s in splits.sets.items()}
    metrics = evaluate_sets(scores, splits, score(splits.val), YOUDEN)[1]
    return _row("supervised CNN (trained on 8s)", seed, metrics, fit_seconds,
                fit_seconds / epochs, epochs)


def _fastest(seconds: dict) -> float | None:
    """The smaller of the PyOD AutoEncoder rows' times (None without PyOD)."""
    times = [seconds[m] for m in PYOD_AE_ROWS if seconds.get(m) is not None]
    return min(times) if times else None


def peers(ctx: Context) -> tuple[dict, list[dict]]:
    rows = []
    try:
        import pyod  # noqa: F401

        have_pyod = True
    except ImportError:
        have_pyod = False
        print("peers: PyOD is not installed (pip install -c constraints.txt -e '.[bench]'); "
              "skipping the PyOD rows")
    for seed in ctx.seed_list:
        cfg = ctx.config("default", [f"seed={seed}"])
        dataset = load_dataset(cfg.data, seed)
        splits = make_splits(dataset, cfg.scenario, seed)
        for label, overrides in RECONAD.items():
            variant = ctx.config("default", [f"seed={seed}", *overrides])
            rows.append(_fit_reconad(label, variant, splits, seed))
        if have_pyod:
            for name, model in _pyod_models(ctx.quick, seed).items():
                rows.append(_fit_pyod(name, model, splits, seed))
        rows.append(_supervised_cnn(dataset, splits, cfg.scenario.dev_anomaly, seed,
                                    epochs=1 if ctx.quick else 3))
    methods = list(dict.fromkeys(r["method"] for r in rows))

    def mean_of(key: str) -> dict:
        return {m: mean_std([r[key] for r in rows if r["method"] == m])[0] for m in methods}

    headline = {k: mean_of(k) for k in ("dev_auroc", "eval_auroc", "eval_f1", "fit_seconds",
                                        "seconds_per_epoch")}
    # against the faster of PyOD's two AutoEncoder rows (the conservative ratio)
    theirs = _fastest(headline["fit_seconds"])
    for label, key in (("reconad (default)", "default"), ("reconad fast (1 epoch)", "fast")):
        ours = headline["fit_seconds"][label]
        headline[f"{key}_fit_time_over_pyod_ae"] = ours / theirs if theirs else None
    plain = headline["seconds_per_epoch"]["reconad plain AE (PyOD's architecture)"]
    pyod_epoch = _fastest(headline["seconds_per_epoch"])
    headline["plain_ae_epoch_time_over_pyod_ae"] = plain / pyod_epoch if pyod_epoch else None
    bar_plot(ctx.out / f"{ctx.stem}.png", methods,
             {"dev AUROC (8s)": [headline["dev_auroc"][m] for m in methods],
              "eval AUROC (4s)": [headline["eval_auroc"][m] for m in methods]},
             "AUROC", "held-out 4/8: same splits", ylim=(0, 1))
    return headline, rows

"""Synthetic run directories: exactly the contract's files, with made-up consistent numbers.

Two variants cover the edge cases the report must survive:

- ``gray``: 1x12x12 images, ten labelled classes; dev = normals + class 8; eval = normals + a
  class-4 group of ONE image; final = normals only (no anomalies).
- ``rgb``: 3x10x10 images, unlabelled (label -1); one training epoch without validation loss;
  eval scores all equal; no final set.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from reconad.config import Config, config_to_yaml


def open_png(path: Path) -> Image.Image:
    """Open a PNG fully (a truncated file fails here), checking nothing else was left behind."""
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []
    image = Image.open(path)
    image.load()
    assert image.format == "PNG" and min(image.size) > 50
    return image


def _images(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    return rng.uniform(0, 1, size=(n, *shape)).astype(np.float32)


def _at(scores: np.ndarray, y: np.ndarray, value: float) -> dict:
    """Confusion counts and rates when flagging score > value (independent of reconad)."""
    flag = scores > value
    tp, fp = int((flag & (y == 1)).sum()), int((flag & (y == 0)).sum())
    tn, fn = int((~flag & (y == 0)).sum()), int((~flag & (y == 1)).sum())
    recall = tp / (tp + fn) if tp + fn else None
    fpr = fp / (fp + tn) if fp + tn else None
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = (2 * tp / (2 * tp + fp + fn)) if tp + fn else None
    bal = (recall + 1 - fpr) / 2 if recall is not None and fpr is not None else None
    return {"value": float(value), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "tpr": recall,
            "fpr": fpr, "precision": precision, "recall": recall, "f1": f1,
            "accuracy": (tp + tn) / len(y), "balanced_accuracy": bal}


def _evaluate(scores: np.ndarray, y: np.ndarray, groups: np.ndarray,
              thresholds: dict[str, float]) -> dict:
    both = 0 < y.sum() < len(y)
    return {
        "n_normal": int((y == 0).sum()), "n_anomaly": int(y.sum()),
        "auroc": float(roc_auc_score(y, scores)) if both else None,
        "average_precision": float(average_precision_score(y, scores)) if both else None,
        "groups": {g: {"n": int((groups == g).sum()), "mean": float(scores[groups == g].mean()),
                       "std": float(scores[groups == g].std())}
                   for g in dict.fromkeys(groups.tolist())},
        "thresholds": {m: _at(scores, y, v) for m, v in thresholds.items()},
    }


def write_synthetic_run(root: Path, variant: str = "gray") -> Path:
    """Write a complete synthetic run directory at ``root`` and return it."""
    rng = np.random.default_rng(0 if variant == "gray" else 1)
    root.mkdir(parents=True, exist_ok=True)
    if variant == "gray":
        shape = (1, 12, 12)
        normal_classes = [0, 1, 2, 3, 5, 6, 7, 9]
        layout = {"dev": {"normal": 120, "class 8": 30},
                  "eval": {"normal": 120, "class 4": 1},
                  "final": {"normal": 80}}
        label_of = {"class 8": 8, "class 4": 4}
    else:
        shape = (3, 10, 10)
        normal_classes = [-1]
        layout = {"dev": {"normal": 60, "gaussian": 10}, "eval": {"normal": 50, "gaussian": 5}}
        label_of = {"gaussian": -1}

    sets = {}
    for set_name, groups in layout.items():
        g = np.concatenate([np.full(n, name) for name, n in groups.items()])
        y = (g != "normal").astype(np.int64)
        labels = np.array([rng.choice(normal_classes) if gg == "normal" else label_of[gg]
                           for gg in g], dtype=np.int64)
        # Normal scores around 0.01, anomalies around 0.03, overlapping.
        s = np.where(y == 1, rng.lognormal(np.log(0.03), 0.4, len(g)),
                     rng.lognormal(np.log(0.01), 0.4, len(g)))
        if variant == "rgb" and set_name == "eval":
            s = np.full(len(g), 0.02)  # all scores equal
        ids = np.array([f"{set_name}-{i}" for i in range(len(g))])
        sets[set_name] = {"groups": g, "y": y, "labels": labels, "scores": s, "ids": ids,
                          "x": _images(rng, len(g), shape)}

    dev = sets["dev"]
    fpr, tpr, cut = roc_curve(dev["y"], dev["scores"])
    youden = float(cut[np.argmax(tpr - fpr)])
    normal_dev = dev["scores"][dev["y"] == 0]
    thresholds = {"youden": youden, "quantile": float(np.quantile(normal_dev, 0.99)),
                  "target_fpr": float(np.quantile(normal_dev, 0.95))}
    chosen = "youden"

    metrics = {"reconad_version": "0.1.0", "name": f"synthetic-{variant}",
               "scenario": "holdout", "score": "mse", "chosen_threshold": chosen,
               "wall_seconds": 12.5,
               "training": {"epochs_run": 6 if variant == "gray" else 1,
                            "best_epoch": 4 if variant == "gray" else 1,
                            "best_val_loss": 0.0123 if variant == "gray" else None,
                            "stopped_early": variant == "gray", "interrupted": False,
                            "train_seconds": 10.25},
               "train": {"groups": {"normal": {"n": 400, "mean": 0.0095, "std": 0.003}}}}
    for name, d in sets.items():
        metrics[name] = _evaluate(d["scores"], d["y"], d["groups"], thresholds)
    (root / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    (root / "config.yaml").write_text(config_to_yaml(Config(name=f"synthetic-{variant}")))
    splits = {"train": 400, "val": 40,
              **{name: {g: int(n) for g, n in groups.items()} for name, groups in layout.items()}}
    (root / "splits.json").write_text(json.dumps(splits, indent=2))

    with (root / "scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "set", "group", "label", "is_anomaly", "score", "flag"])
        for name, d in sets.items():
            for i in range(len(d["ids"])):
                w.writerow([d["ids"][i], name, d["groups"][i], d["labels"][i], d["y"][i],
                            f"{d['scores'][i]:.8g}", int(d["scores"][i] > thresholds[chosen])])

    with (root / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "val_loss", "lr", "seconds"])
        epochs = metrics["training"]["epochs_run"]
        for e in range(1, epochs + 1):
            val = "" if variant == "rgb" else f"{0.05 / e + 0.01:.6g}"
            w.writerow([e, f"{0.06 / e + 0.008:.6g}", val, "0.001", "1.5"])

    ev = sets["eval"]
    picks, kinds = [], []
    for g in dict.fromkeys(ev["groups"].tolist()):
        members = np.flatnonzero(ev["groups"] == g)[:8]
        picks += members.tolist()
        kinds += ["sample"] * len(members)
    order = np.argsort(ev["scores"], kind="stable")
    picks += order[::-1][:16].tolist() + order[:16].tolist()
    kinds += ["top"] * 16 + ["bottom"] * 16
    idx = np.asarray(picks)
    x = ev["x"][idx]
    recon = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    np.savez_compressed(
        root / "samples.npz", images=x, reconstructions=recon,
        error_maps=((recon - x) ** 2).mean(axis=1).astype(np.float32),
        scores=ev["scores"][idx], groups=ev["groups"][idx].astype(str),
        labels=ev["labels"][idx], ids=ev["ids"][idx].astype(str),
        sets=np.full(len(idx), "eval"), kinds=np.asarray(kinds))
    return root

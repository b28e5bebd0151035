"""The run directory: written atomically, in the format docs/architecture.md describes.

A run is built in a hidden sibling folder (:func:`reconad.files.atomic_directory`) and renamed
into place only when every file is written, so a killed run never leaves a directory that looks
complete.
Reading the files back, checked, is :mod:`reconad.run_reader`'s job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reconad.files import write_csv_atomic

SCORE_COLUMNS = ("id", "set", "group", "label", "is_anomaly", "score", "flag")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds")


def write_history(path: Path, rows: list[dict]) -> None:
    """history.csv: one row per epoch (val_loss empty when there was no validation set)."""
    write_csv_atomic(path, HISTORY_COLUMNS, (
        [r["epoch"], f"{r['train_loss']:.8g}",
         "" if r["val_loss"] is None else f"{r['val_loss']:.8g}", f"{r['lr']:.6g}", r["seconds"]]
        for r in rows))


def write_scores(path: Path, sets: dict, scores: dict[str, np.ndarray], threshold: float) -> None:
    """scores.csv: one row per image per evaluated set; flag = score > threshold."""
    def rows():
        for name, eval_set in sets.items():
            for i in range(len(scores[name])):
                score = float(scores[name][i])
                yield (eval_set.ids[i], name, eval_set.group[i], int(eval_set.label[i]),
                       int(eval_set.is_anomaly[i]), f"{score:.8g}", int(score > threshold))
    write_csv_atomic(path, SCORE_COLUMNS, rows())


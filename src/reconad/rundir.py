"""The run directory: written atomically, in the format docs/architecture.md describes.

A run is built in a hidden sibling folder (``.NAME.partial-PID``) and renamed into place only
when every file is written, so a killed run never leaves a directory that looks complete.
Reading the files back, checked, is :mod:`reconad.run_reader`'s job.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from reconad.errors import ReconadError

SCORE_COLUMNS = ("id", "set", "group", "label", "is_anomaly", "score", "flag")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds")


def check_writable(final: Path, overwrite: bool = False) -> None:
    """Refuse to replace a non-empty directory unless ``overwrite`` (call before long work)."""
    final = Path(final)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise ReconadError(f"output directory {final} already exists and is not empty; choose "
                           "another --out or delete it (or pass --overwrite)")


@contextmanager
def atomic_directory(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` only if the block completes."""
    final = Path(final)
    check_writable(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    """Pretty JSON (NaN is not valid JSON: callers pass None for undefined numbers)."""
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, columns: tuple[str, ...], rows) -> None:
    """A CSV with a header row; ``rows`` yields sequences in column order."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def write_history(path: Path, rows: list[dict]) -> None:
    """history.csv: one row per epoch (val_loss empty when there was no validation set)."""
    write_csv(path, HISTORY_COLUMNS, (
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
    write_csv(path, SCORE_COLUMNS, rows())


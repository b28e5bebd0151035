"""The run directory: the files ``reconad run`` writes and the checked reading of them back.

The format is the contract in docs/architecture.md ("Run directory"). The pipeline writes it
(:func:`write_history`, :func:`write_scores`, inside :func:`reconad.files.atomic_directory`, so
a killed run never leaves a directory that looks complete); the report and ``reconad compare``
read it with :func:`read_run` / :func:`read_metrics`. Every problem with a file is a one-line
:class:`~reconad.errors.ReconadError` that names the file and what to do.

>>> run = read_run("runs/first")                    # doctest: +SKIP
>>> run.metrics["eval"]["auroc"], run.scores.set_names()   # doctest: +SKIP
(0.97, ['dev', 'eval'])
"""

from __future__ import annotations

import csv
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reconad.errors import ReconadError
from reconad.files import write_csv_atomic

SCORE_COLUMNS = ("id", "set", "group", "label", "is_anomaly", "score", "flag")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds")
# The history columns the report reads (lr and seconds are for people).
_HISTORY_READ = HISTORY_COLUMNS[:3]
SAMPLE_KEYS = ("images", "reconstructions", "error_maps", "scores", "groups", "labels", "ids",
               "sets", "kinds")
# The evaluated sets in the order a reader meets them; any other set name comes after.
SET_ORDER = ("dev", "eval", "final")
# Runs on defect data (masks) also keep the defect masks (K, H, W) bool and the map value whose
# outline the overlays draw (the 99th percentile of the normal validation maps).
SAMPLE_DEFECT_KEYS = ("masks", "map_threshold")

_RERUN = "run `reconad run` again to recreate the run directory"

# ---------------------------------------------------------------------------------------------
# Writing


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


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class Scores:
    """The columns of scores.csv, one entry per scored image per set."""

    ids: np.ndarray  # (N,) str
    sets: np.ndarray  # (N,) str
    groups: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64, -1 = unknown
    is_anomaly: np.ndarray  # (N,) int64 0/1
    scores: np.ndarray  # (N,) float64
    flags: np.ndarray  # (N,) int64 0/1

    def set_names(self) -> list[str]:
        """The sets present, dev/eval/final first."""
        present = set(self.sets.tolist())
        return [s for s in SET_ORDER if s in present] + sorted(present - set(SET_ORDER))

    def subset(self, set_name: str) -> Scores:
        """The rows of one set."""
        keep = self.sets == set_name
        return Scores(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def run_dir_path(run_dir: str | Path) -> Path:
    """Check that ``run_dir`` is an existing folder and return it as a Path."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ReconadError(f"run directory {path} does not exist; pass the folder that "
                           f"`reconad run --out` wrote")
    return path


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json as a dict (required)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise ReconadError(f"{path} is missing; is {run_dir} a `reconad run` output? {_RERUN}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReconadError(f"{path} is not valid JSON ({exc}); {_RERUN}") from None
    if not isinstance(data, dict):
        raise ReconadError(f"{path} should hold a JSON object, not {type(data).__name__}; "
                           f"{_RERUN}")
    return data


def read_config_text(run_dir: Path) -> str | None:
    """config.yaml as text, or None when it is missing."""
    path = run_dir / "config.yaml"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def read_splits(run_dir: Path) -> dict[str, Any] | None:
    """splits.json as a dict, or None when it is missing."""
    path = run_dir / "splits.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReconadError(f"{path} is not valid JSON ({exc}); {_RERUN}") from None
    if not isinstance(data, dict):
        raise ReconadError(f"{path} should hold a JSON object; {_RERUN}")
    return data


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise ReconadError(f"{path} lacks the column(s) {', '.join(missing)} (header: "
                                   f"{reader.fieldnames}); {_RERUN}")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReconadError(f"{path} is not a readable CSV file ({exc}); {_RERUN}") from None


def _column(rows: list[dict[str, str]], name: str, kind: type, path: Path) -> np.ndarray:
    values = []
    for line, row in enumerate(rows, start=2):
        text = (row.get(name) or "").strip()
        try:
            values.append(kind(text) if text or kind is str else (np.nan if kind is float
                                                                  else kind(text)))
        except ValueError:
            raise ReconadError(f"{path} line {line}: column {name!r} holds {text!r}, not a "
                               f"{kind.__name__}; {_RERUN}") from None
    dtype = {str: str, int: np.int64, float: np.float64}[kind]
    return np.asarray(values, dtype=dtype) if values else np.zeros(0, dtype=dtype)


def read_scores(run_dir: Path) -> Scores:
    """scores.csv (required)."""
    path = run_dir / "scores.csv"
    if not path.is_file():
        raise ReconadError(f"{path} is missing; is {run_dir} a `reconad run` output? {_RERUN}")
    rows = _read_csv(path, SCORE_COLUMNS)
    return Scores(
        ids=_column(rows, "id", str, path),
        sets=_column(rows, "set", str, path),
        groups=_column(rows, "group", str, path),
        labels=_column(rows, "label", int, path),
        is_anomaly=_column(rows, "is_anomaly", int, path),
        scores=_column(rows, "score", float, path),
        flags=_column(rows, "flag", int, path),
    )


def read_history(run_dir: Path) -> dict[str, np.ndarray] | None:
    """history.csv as columns (epoch, train_loss, val_loss; NaN where empty), or None."""
    path = run_dir / "history.csv"
    if not path.is_file():
        return None
    rows = _read_csv(path, _HISTORY_READ)
    return {
        "epoch": _column(rows, "epoch", int, path),
        "train_loss": _column(rows, "train_loss", float, path),
        "val_loss": _column(rows, "val_loss", float, path),
    }


def read_samples(run_dir: Path) -> dict[str, np.ndarray] | None:
    """samples.npz as a dict of arrays with consistent lengths, or None when missing."""
    path = run_dir / "samples.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in SAMPLE_KEYS if k not in npz.files]
            if missing:
                raise ReconadError(f"{path} lacks the array(s) {', '.join(missing)}; {_RERUN}")
            data = {k: npz[k] for k in SAMPLE_KEYS}
            data.update({k: npz[k] for k in SAMPLE_DEFECT_KEYS if k in npz.files})
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ReconadError(f"{path} is not a readable .npz file ({exc}); {_RERUN}") from None
    n = len(data["images"])
    if data["images"].ndim != 4 or data["reconstructions"].shape != data["images"].shape:
        raise ReconadError(f"{path}: images and reconstructions must both be (K, C, H, W); got "
                           f"{data['images'].shape} and {data['reconstructions'].shape}; "
                           f"{_RERUN}")
    bad = [k for k in SAMPLE_KEYS if len(data[k]) != n]
    if bad or data["error_maps"].shape != (n, *data["images"].shape[2:]):
        raise ReconadError(f"{path}: arrays {', '.join(bad) or 'error_maps'} do not match the "
                           f"{n} images (K, H, W); {_RERUN}")
    if set(SAMPLE_DEFECT_KEYS) & set(data) and (
            set(SAMPLE_DEFECT_KEYS) - set(data) or data["masks"].shape != data["error_maps"].shape
            or data["masks"].dtype != bool or data["map_threshold"].shape != ()
            or not np.isfinite(data["map_threshold"])):
        raise ReconadError(f"{path}: masks must be bool (K, H, W) beside a finite scalar "
                           f"map_threshold; {_RERUN}")
    for k in ("groups", "ids", "sets", "kinds"):
        data[k] = data[k].astype(str)
    return data


@dataclass
class Run:
    """Every file of a run directory, read and checked; optional files are None when missing."""

    root: Path
    metrics: dict[str, Any]
    scores: Scores
    config_text: str | None
    history: dict[str, np.ndarray] | None
    splits: dict[str, Any] | None
    samples: dict[str, np.ndarray] | None


def read_run(run_dir: str | Path) -> Run:
    """Read a run directory: metrics.json and scores.csv are required, the rest optional.

    Args:
        run_dir: a folder written by ``reconad run``.

    Returns:
        The checked contents.

    Raises:
        ReconadError: the folder or a required file is missing, or a file is malformed.
    """
    root = run_dir_path(run_dir)
    return Run(
        root=root,
        metrics=read_metrics(root),
        scores=read_scores(root),
        config_text=read_config_text(root),
        history=read_history(root),
        splits=read_splits(root),
        samples=read_samples(root),
    )

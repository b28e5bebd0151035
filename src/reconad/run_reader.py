"""Read the files of a run directory (the contract in docs/architecture.md), checked.

Used by the report and by ``reconad compare``; every problem with a file is a one-line
:class:`~reconad.errors.ReconadError` that names the file and what to do.
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

SCORE_COLUMNS = ("id", "set", "group", "label", "is_anomaly", "score", "flag")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss")
SAMPLE_KEYS = ("images", "reconstructions", "error_maps", "scores", "groups", "labels", "ids",
               "sets", "kinds")
# The evaluated sets in the order a reader meets them; any other set name comes after.
SET_ORDER = ("dev", "eval", "final")

_RERUN = "run `reconad run` again to recreate the run directory"


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
    rows = _read_csv(path, HISTORY_COLUMNS)
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
    for k in ("groups", "ids", "sets", "kinds"):
        data[k] = data[k].astype(str)
    return data

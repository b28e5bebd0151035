"""Atomic output: every file and folder reconad writes appears complete or not at all.

Everything is written to a hidden sibling named ``.NAME.partial-PID`` (``.gitignore`` covers
the pattern) and renamed over the final name only when complete, so a crash, a kill -9 or a
full disk never leaves a half-written file under the final name.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
>>> write_text_atomic(out, "hi")
>>> out.read_text()
'hi'
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from reconad.errors import ReconadError


def partial_name(path: Path) -> Path:
    """The hidden temporary sibling that becomes ``path`` once complete."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block completes.

    The temporary keeps ``path``'s suffix (writers such as matplotlib infer the format
    from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Pretty JSON, atomically (NaN is not valid JSON: callers pass None for undefined)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_csv_atomic(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A CSV with a header row, atomically; ``rows`` yields sequences in column order."""
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def check_writable(final: Path, overwrite: bool = False) -> None:
    """Refuse to replace a non-empty directory unless ``overwrite`` (call before long work)."""
    final = Path(final)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise ReconadError(f"output directory {final} already exists and is not empty; choose "
                           "another --out or delete it (or pass --overwrite)")


@contextmanager
def atomic_directory(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` only if the block completes."""
    final = Path(final)
    check_writable(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Atomic output: every file and folder reconad writes appears complete or not at all.

Files are written to a hidden sibling named ``.NAME.partial-PID`` (``.gitignore`` covers
the pattern) and renamed over the final name only when complete, so a crash, a kill -9 or a
full disk never leaves a half-written file under the final name.

A directory is built in ``.NAME.partial`` (no PID: a resumed run finds the folder a killed one
left, with its training checkpoint) while its writer holds ``.NAME.lock``, an exclusive
``flock`` the kernel drops when the process dies, even by kill -9. A second writer of the same
directory gets a one-line :class:`ReconadError` instead of mixing its files in.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
>>> write_text_atomic(out, "hi")
>>> out.read_text()
'hi'
"""

from __future__ import annotations

import csv
import errno
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


def partial_dir_name(final: Path) -> Path:
    """The hidden folder that becomes the directory ``final`` once complete (stable across
    processes, so a resumed run finds it)."""
    return final.with_name(f".{final.name}.partial")


def lock_name(final: Path) -> Path:
    """The lock file held by whoever is building the directory ``final``."""
    return final.with_name(f".{final.name}.lock")


@contextmanager
def directory_lock(final: str | Path) -> Iterator[None]:
    """Hold the exclusive lock on building ``final``; a second holder gets a ReconadError.

    The lock file is opened with ``O_CREAT`` and locked with ``flock(LOCK_EX | LOCK_NB)``: the
    kernel releases it when the holder exits or is killed, so a crash never leaves a stale
    lock. The file is unlinked on release; a waiter that locked the unlinked inode retries.
    """
    import fcntl  # POSIX only; kept local so that `import reconad` works everywhere

    lock = lock_name(Path(final))
    # Folders made here for the lock are removed again if nothing else was put in them, so a
    # run that fails before writing anything leaves no trace (not even an empty runs/).
    made = [d for d in (lock.parent, *lock.parent.parents) if not d.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _lock_holder(lock)
            raise ReconadError(
                f"another reconad process{holder} is writing {final} (lock {lock}); wait for it "
                "to finish or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file its previous holder had just unlinked: try again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
        for folder in made:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty (the finished run is there) or already gone
                break


def _lock_holder(lock: Path) -> str:
    """`` (pid N)`` from the lock file, or nothing when it cannot be read."""
    try:
        pid = int(lock.read_text().strip())
    except (OSError, ValueError):
        return ""
    return f" (pid {pid})"


@contextmanager
def atomic_directory(final: str | Path, overwrite: bool = False,
                     resume: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` only if the block completes.

    The folder is ``.NAME.partial`` beside ``final``, built under :func:`directory_lock`.
    ``resume`` keeps what a killed earlier attempt left there (its checkpoint); otherwise
    it starts empty. An exception in the block removes the folder; only a killed process
    (kill -9, power loss) leaves it behind, for ``resume``.
    """
    final = Path(final)
    with directory_lock(final):
        check_writable(final, overwrite)
        tmp = partial_dir_name(final)
        if not resume:
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

"""Checksum-verified, atomic download of one file from a list of mirrors (urllib only).

The bytes go to a hidden temporary file in the destination folder; only after the md5 check
passes is it renamed onto the final name with :func:`os.replace`. A half-downloaded or corrupt
file therefore never carries the final name, whatever goes wrong (network error, checksum
mismatch, Ctrl-C).

A file passes if the md5 of its bytes, or of its decompressed content when it is gzip, is one
of the accepted sums: the decompressed md5 holds for every mirror, whereas mirrors may
recompress the ``.gz`` bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Collection, Sequence
from pathlib import Path

from reconad.errors import ReconadError

CHUNK = 1 << 16
USER_AGENT = "reconad (https://pypi.org/project/reconad)"


class MirrorsUnreachable(ReconadError):
    """No mirror could deliver the file (network down, HTTP errors, cut-off transfers)."""


def file_md5s(path: str | Path) -> tuple[str, str | None]:
    """md5 of a file's bytes and, when it is gzip, of its decompressed content.

    Returns:
        ``(md5 of the bytes, md5 of the decompressed content or None)``; the second is also
        None when the gzip stream is corrupt or truncated (the file then cannot pass on it).
    """
    raw = hashlib.md5()
    with open(path, "rb") as handle:
        head = handle.read(2)
        raw.update(head)
        for block in iter(lambda: handle.read(CHUNK), b""):
            raw.update(block)
    if head != b"\x1f\x8b":
        return raw.hexdigest(), None
    inner = hashlib.md5()
    try:
        with gzip.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                inner.update(block)
    except (EOFError, OSError, zlib.error):
        return raw.hexdigest(), None
    return raw.hexdigest(), inner.hexdigest()


def download(
    urls: Sequence[str],
    dest: str | Path,
    md5s: Collection[str],
    progress: bool | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch ``dest`` from the first URL that delivers a file with an accepted md5.

    Mirrors are tried in order; an unreachable mirror, an HTTP error, a cut-off transfer or a
    checksum mismatch moves on to the next one.

    Args:
        urls: full URLs of the same file on each mirror, in order of preference.
        dest: the final path; its folder is created if needed.
        md5s: accepted md5 sums (of the bytes or of the decompressed content); empty = no check.
        progress: show a progress bar on stderr; None = only when stderr is a terminal.
        timeout: seconds to wait for a mirror to answer or send more bytes.

    Returns:
        ``dest``, now holding verified bytes.

    Raises:
        ReconadError: the file arrived but failed the checksum on every mirror that served it.
        MirrorsUnreachable: no mirror delivered the file at all.
    """
    dest = Path(dest)
    accepted = {m.lower() for m in md5s}
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReconadError(
            f"cannot create {dest.parent} ({exc.strerror or exc}); "
            "set --data-dir or RECONAD_DATA to a writable folder"
        ) from None
    if progress is None:
        progress = sys.stderr.isatty()
    failures: list[str] = []
    mismatch: str | None = None
    for url in urls:
        try:
            tmp = _fetch_to_temp(url, dest, timeout, progress)
        except _TransferError as exc:
            failures.append(f"{url}: {exc}")
            continue
        try:
            got_raw, got_inner = file_md5s(tmp)
            if not accepted or got_raw in accepted or got_inner in accepted:
                os.replace(tmp, dest)
                return dest
            got = got_raw + (f" (decompressed {got_inner})" if got_inner else "")
            mismatch = (
                f"{dest.name} from {url} has md5 {got}, expected {' or '.join(sorted(accepted))}:"
                f" the download is corrupt; try again or place the file by hand in {dest.parent}"
            )
            failures.append(f"{url}: checksum mismatch")
        finally:
            tmp.unlink(missing_ok=True)
    if mismatch is not None:
        raise ReconadError(mismatch)
    raise MirrorsUnreachable(f"could not download {dest.name} ({'; '.join(failures)})")


class _TransferError(Exception):
    """A mirror failed to deliver (the next one is tried)."""


def _fetch_to_temp(url: str, dest: Path, timeout: float, progress: bool) -> Path:
    """Stream ``url`` into a hidden temp file next to ``dest``; delete it on any failure."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = _copy(response, out, total, dest.name, progress)
        if total is not None and received != total:
            raise _TransferError(f"transfer cut off ({received} of {total} bytes)")
        return tmp
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise _TransferError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        tmp.unlink(missing_ok=True)
        raise _TransferError(str(exc.reason)) from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        tmp.unlink(missing_ok=True)
        raise _TransferError(str(exc) or type(exc).__name__) from None
    except BaseException:  # _TransferError, KeyboardInterrupt: never leave the temp file
        tmp.unlink(missing_ok=True)
        raise


def _copy(response, out, total: int | None, label: str, progress: bool) -> int:
    """Copy the response body to ``out`` in chunks, with an optional rich progress bar."""
    received = 0
    if not progress:
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            received += len(block)
        return received
    # Imported here to keep `import reconad.data` light.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"downloading {label}", total=total)
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            received += len(block)
            bar.update(task, advance=len(block))
    return received

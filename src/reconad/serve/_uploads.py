"""Reading a ``POST /score`` body: a ``multipart/form-data`` form of ``file`` fields, parsed as
it streams in, every limit enforced while it is read.

The body is never held whole: each chunk is fed to python-multipart's streaming parser, each
file's bytes go to a spooled temporary file (in memory up to :data:`SPOOL_BYTES`, then on
disk), and a file passing ``max_file_bytes``, a field past ``max_images`` or a body past
``max_body_bytes`` stops the reading at that byte. A refused body is then read to its end
and thrown away (at most ``max_body_bytes`` in all), so that a client that sends its whole
body before it reads the answer still gets the one-line answer instead of a reset connection;
a body declaring a larger ``Content-Length`` is refused before a byte of it is read.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from reconad.serve._http import (
    BAD_REQUEST,
    HOW_TO_SEND,
    TOO_LARGE,
    UNSUPPORTED,
    ServeError,
    shown_name,
)
from reconad.serve._settings import ServeSettings

try:  # the serve extra (pip install "reconad[serve]"); create_app says so when it is missing
    from python_multipart.multipart import (
        MultipartParseError,
        MultipartParser,
        parse_options_header,
    )
except ImportError:  # pragma: no cover - reconad.serve still imports, create_app refuses
    MultipartParser = parse_options_header = None
    MultipartParseError = ValueError

SPOOL_BYTES = 2**20  # a file's bytes kept in memory before they go to a temporary file
FIELD = "file"


@dataclass
class Upload:
    """One uploaded file: the client's name for it, its bytes (spooled) and their count."""

    name: str
    spool: tempfile.SpooledTemporaryFile = field(
        default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))
    size: int = 0

    def read(self) -> bytes:
        """The file's bytes (at most ``max_file_bytes``)."""
        self.spool.seek(0)
        return self.spool.read()

    def close(self) -> None:
        self.spool.close()


class _Form:
    """python-multipart's callbacks: the parts of a form, checked against the limits."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.uploads: list[Upload] = []
        self.current: Upload | None = None
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value_data, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data}

    def part_begin(self) -> None:
        self.current, self.disposition = None, b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        if self.header_name.strip().lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name != FIELD:
            raise ServeError(BAD_REQUEST, f"unexpected form field {shown_name(name)}; "
                                          f"{HOW_TO_SEND}")
        if b"filename" not in options:
            raise ServeError(BAD_REQUEST, f"form field 'file' holds text, not a file; "
                                          f"{HOW_TO_SEND}")
        if len(self.uploads) >= self.settings.max_images:
            limit = self.settings.max_images
            raise ServeError(TOO_LARGE, f"the request holds more than {limit} images; send at "
                                        f"most {limit} per request (the server's --max-images)")
        self.current = Upload(options[b"filename"].decode("utf-8", "replace"))
        self.uploads.append(self.current)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        upload = self.current
        upload.size += end - start
        if upload.size > self.settings.max_file_bytes:
            raise ServeError(TOO_LARGE, f"{shown_name(upload.name)} is larger than "
                                        f"{self.settings.max_file_bytes} bytes; send a smaller "
                                        "image (the server's --max-file-bytes)")
        upload.spool.write(data[start:end])

    def close(self) -> None:
        for upload in self.uploads:
            upload.close()


async def read_uploads(content_type: str | None, content_length: str | None,
                       chunks: AsyncIterator[bytes], settings: ServeSettings) -> list[Upload]:
    """The files of a ``multipart/form-data`` body, read chunk by chunk under the limits.

    Args:
        content_type: the request's ``Content-Type`` header.
        content_length: its ``Content-Length`` header (None for a chunked body).
        chunks: the body as it arrives (Starlette's ``request.stream()``).
        settings: the limits.

    Returns:
        One :class:`Upload` per ``file`` field, in order (an empty, unnamed one, which a
        browser sends for an empty file input, is dropped). The caller closes them.

    Raises:
        ServeError: 415 not a form; 400 malformed, empty, or a field other than ``file``;
            413 a limit passed.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        got = kind.decode("latin-1") or "undeclared"
        raise ServeError(UNSUPPORTED, f"the body is {got}, not multipart/form-data; "
                                      f"{HOW_TO_SEND}")
    if not options.get(b"boundary"):
        raise ServeError(BAD_REQUEST, f"the multipart form has no boundary; {HOW_TO_SEND}")
    limit = settings.max_body_bytes
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(int(content_length), limit)
    form = _Form(settings)
    parser = MultipartParser(options[b"boundary"], form.callbacks())
    received = 0
    try:
        try:
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise _too_large(received, limit)
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise ServeError(BAD_REQUEST, f"the multipart form is malformed ({exc}); "
                                          f"{HOW_TO_SEND}") from None
        except ServeError:
            await _discard(chunks, limit - received)
            raise
    except BaseException:
        form.close()
        raise
    uploads = []
    for upload in form.uploads:
        if upload.name == "" and upload.size == 0:
            upload.close()
        else:
            uploads.append(upload)
    if not uploads:
        raise ServeError(BAD_REQUEST, f"the form holds no image; {HOW_TO_SEND}")
    return uploads


def _too_large(size: int, limit: int) -> ServeError:
    return ServeError(TOO_LARGE, f"the request body is {size} bytes or more, over the {limit} "
                                 "bytes one request may hold; send fewer or smaller images "
                                 "(the server's --max-images and --max-file-bytes)")


async def _discard(chunks: AsyncIterator[bytes], budget: int) -> None:
    """Read and drop the rest of a refused body, at most ``budget`` bytes."""
    async for chunk in chunks:
        budget -= len(chunk)
        if budget < 0:
            return

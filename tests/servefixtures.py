"""Helpers for the ``reconad serve`` tests: a real uvicorn server in a thread, multipart bodies
built by hand, a client that sends a body while it watches for an early answer (as curl does),
and PNG files."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

BOUNDARY = "reconad-test-boundary"


@contextlib.contextmanager
def running(app) -> Iterator[int]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields the port.
    The socket is bound before the server starts, so no other process can take the port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def multipart(files: Iterable[tuple[str, bytes]], field: str = "file") -> bytes:
    """A ``multipart/form-data`` body with one file part per ``(file name, bytes)``."""
    out = io.BytesIO()
    for name, data in files:
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; '
                  f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                  .encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


FORM = f"multipart/form-data; boundary={BOUNDARY}"


def request(port: int, method: str, path: str, body: bytes | None = None,
            content_type: str | None = FORM, timeout: float = 60) -> tuple[int, object]:
    """(status, decoded JSON or text) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": content_type} if body is not None and content_type else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data.decode()


def post_files(port: int, files: Iterable[tuple[str, bytes]], query: str = "",
               field: str = "file") -> tuple[int, object]:
    """POST /score with one ``file`` field per ``(file name, bytes)``."""
    return request(port, "POST", f"/score{query}", multipart(files, field))


def send_streaming(port: int, head: bytes, chunks: Iterable[bytes],
                   timeout: float = 60) -> tuple[int, dict, int]:
    """Send ``head`` (request line and headers) then ``chunks`` of body the way curl does:
    with ``Expect: 100-continue`` in ``head`` the body waits for the server's go-ahead, and
    after each chunk the client looks for an answer and stops sending once one has come.

    Returns:
        (status, JSON body, body bytes sent before the answer came).
    """
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        if b"expect: 100-continue" in head.lower():
            answer = _read_head(sock, answer)
            if answer.startswith(b"HTTP/1.1 100"):  # go ahead: drop the interim answer
                answer = answer.partition(b"\r\n\r\n")[2]
            else:
                chunks = ()
        for chunk in chunks:
            if answer or select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = _read_head(sock, answer)
        while len(answer) < _length(answer):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    head_text, _, body = answer.partition(b"\r\n\r\n")
    return int(head_text.split()[1]), json.loads(body[:_length(answer)]), sent


def _read_head(sock: socket.socket, answer: bytes) -> bytes:
    """``answer`` read on until it holds a whole status line and headers."""
    while b"\r\n\r\n" not in answer:
        part = sock.recv(65536)
        assert part, f"the server closed the connection without an answer: {answer!r}"
        answer += part
    return answer


def _length(answer: bytes) -> int:
    """The whole length of a response whose headers have arrived: headers + Content-Length."""
    head = answer.partition(b"\r\n\r\n")[0]
    for line in head.decode("latin-1").lower().split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":")[1]) + len(head) + 4
    return len(answer)


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    """``pixels`` (H, W) or (H, W, C) in [0, 1] as an 8-bit PNG (16-bit with mode I;16)."""
    buffer = io.BytesIO()
    if mode == "I;16":
        image = Image.fromarray(np.round(pixels * 65535).astype(np.uint16))
    else:
        image = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
        image = image.convert(mode) if mode else image
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    """The files ``{name: bytes}`` written into ``folder`` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder

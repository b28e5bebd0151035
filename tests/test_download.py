"""The downloader against a local HTTP server on 127.0.0.1 (never the real internet)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconad.data import MirrorsUnreachable, download, file_md5s
from reconad.errors import ReconadError

LABELS = "t10k-labels-idx1-ubyte.gz"
# Published md5 of the mirrors' .gz and md5 of the decompressed content (../shared/data/mnist).
LABELS_GZ_MD5 = "ec29112dd5afa0611ce80d1b7f02629c"
LABELS_CONTENT_MD5 = "27ae3e4e09519cfbb04c329615203637"


class _Handler(SimpleHTTPRequestHandler):
    """Static files, plus /short/<file>: announces the full length but sends half."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / "good" / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path_factory, mnist_dir, monkeypatch) -> Iterator[str]:
    """http://127.0.0.1:PORT serving good/ (real files), bad/ (a flipped byte), regz/ (same
    content, different gzip bytes); missing/ does not exist (404)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path_factory.mktemp("www")
    (root / "good").mkdir()
    shutil.copy(mnist_dir / LABELS, root / "good" / LABELS)
    (root / "bad").mkdir()
    blob = bytearray((mnist_dir / LABELS).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (root / "bad" / LABELS).write_bytes(bytes(blob))
    (root / "regz").mkdir()
    content = gzip.decompress((mnist_dir / LABELS).read_bytes())
    (root / "regz" / LABELS).write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    handler = functools.partial(_Handler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_good_download_verifies_and_lands_atomically(server, tmp_path, mnist_dir):
    dest = tmp_path / "data" / LABELS
    got = download([f"{server}/good/{LABELS}"], dest, {LABELS_GZ_MD5}, progress=False)
    assert got == dest
    assert dest.read_bytes() == (mnist_dir / LABELS).read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [LABELS]  # no temp file left


def test_progress_bar_path_downloads_too(server, tmp_path, mnist_dir):
    dest = tmp_path / LABELS
    download([f"{server}/good/{LABELS}"], dest, {LABELS_GZ_MD5}, progress=True)
    assert hashlib.md5(dest.read_bytes()).hexdigest() == LABELS_GZ_MD5


def test_corrupt_download_rejected_and_nothing_left(server, tmp_path):
    dest = tmp_path / LABELS
    with pytest.raises(ReconadError, match=rf"{LABELS} from .* has md5 [0-9a-f]{{32}}.*expected "
                       rf".*{LABELS_GZ_MD5}.*the download is corrupt; try again or place the "
                       rf"file by hand in {tmp_path}"):
        download([f"{server}/bad/{LABELS}"], dest, {LABELS_GZ_MD5, LABELS_CONTENT_MD5},
                 progress=False)
    assert list(tmp_path.iterdir()) == []


def test_recompressed_file_passes_on_content_md5(server, tmp_path):
    dest = tmp_path / LABELS
    download([f"{server}/regz/{LABELS}"], dest, {LABELS_GZ_MD5, LABELS_CONTENT_MD5},
             progress=False)
    raw, content = file_md5s(dest)
    assert raw != LABELS_GZ_MD5 and content == LABELS_CONTENT_MD5


def test_404_on_first_mirror_falls_back_to_second(server, tmp_path):
    dest = tmp_path / LABELS
    urls = [f"{server}/missing/{LABELS}", f"{server}/good/{LABELS}"]
    download(urls, dest, {LABELS_GZ_MD5}, progress=False)
    assert file_md5s(dest)[0] == LABELS_GZ_MD5


def test_corrupt_first_mirror_falls_back_to_good_second(server, tmp_path):
    dest = tmp_path / LABELS
    download([f"{server}/bad/{LABELS}", f"{server}/good/{LABELS}"], dest, {LABELS_GZ_MD5},
             progress=False)
    assert file_md5s(dest)[0] == LABELS_GZ_MD5


def test_cut_off_transfer_leaves_nothing(server, tmp_path):
    dest = tmp_path / LABELS
    with pytest.raises(MirrorsUnreachable, match=r"transfer cut off \(\d+ of \d+ bytes\)"):
        download([f"{server}/short/{LABELS}"], dest, {LABELS_GZ_MD5}, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_all_mirrors_fail_names_each_reason(server, tmp_path):
    dest = tmp_path / LABELS
    urls = [f"{server}/missing/{LABELS}", closed_port_url() + LABELS]
    with pytest.raises(MirrorsUnreachable, match=rf"could not download {LABELS} \(.*HTTP 404.*; "
                                                 r".*refused"):
        download(urls, dest, {LABELS_GZ_MD5}, progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []
    assert issubclass(MirrorsUnreachable, ReconadError)


def test_unwritable_destination(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReconadError, match=r"cannot create .*file.*writable folder"):
        download(["http://127.0.0.1:9/x"], blocker / "sub" / LABELS, set(), progress=False)

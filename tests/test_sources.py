"""Named datasets: lookup order, local checks, download of missing files, offline message."""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from reconad.data import SOURCES, ensure_files, find_files, load_named, search_dirs
from reconad.data._sources import get_source
from reconad.errors import ReconadError

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path) -> Path:
    """No RECONAD_DATA (CI sets it), the user cache inside tmp_path, no proxies."""
    for var in ("RECONAD_DATA", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "reconad"


def link_all(mnist_dir: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (folder / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    return folder


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(mnist_dir) -> Iterator[str]:
    """A local mirror on 127.0.0.1 serving the MNIST files at its root."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                functools.partial(_Quiet, directory=str(mnist_dir)))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, mnist_dir, monkeypatch, clean_env):
    link_all(mnist_dir, clean_env / "mnist")
    assert find_files("mnist")[0].parent == clean_env / "mnist"
    link_all(mnist_dir, tmp_path / "env")  # files directly in $RECONAD_DATA
    monkeypatch.setenv("RECONAD_DATA", str(tmp_path / "env"))
    assert find_files("mnist")[0].parent == tmp_path / "env"
    link_all(mnist_dir, tmp_path / "mine" / "mnist")  # in <data_dir>/mnist/
    assert [p.name for p in find_files("mnist", tmp_path / "mine")] == [f"{n}.gz" for n in NAMES]
    assert find_files("mnist", tmp_path / "mine")[0].parent == tmp_path / "mine" / "mnist"
    assert search_dirs(tmp_path / "mine") == [tmp_path / "mine", tmp_path / "env", clean_env]


def test_unzipped_files_and_incomplete_folders(tmp_path):
    folder = tmp_path / "d" / "kmnist"
    folder.mkdir(parents=True)
    for name in NAMES[:3]:
        (folder / name).touch()
    assert find_files("kmnist", tmp_path / "d") is None  # three of four: not a dataset
    (folder / NAMES[3]).touch()
    assert find_files("kmnist", tmp_path / "d") == [folder / n for n in NAMES]


def test_load_named_real_mnist_gz_and_unzipped_agree(tmp_path, mnist_dir):
    ds = load_named("mnist", data_dir=mnist_dir, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64  # stored grey levels
    assert ds.train_x.min() == 0 and ds.train_x.max() == 255
    assert np.bincount(ds.test_y).tolist() == TEST_COUNTS
    assert ds.test_y[:5].tolist() == [7, 2, 1, 0, 4]  # the famous first test digits
    # The same data with the test files unzipped (and checked on their content md5).
    folder = tmp_path / "unz"
    folder.mkdir()
    for name in NAMES[:2]:
        (folder / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    for name in NAMES[2:]:
        (folder / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    again = load_named("mnist", data_dir=folder, download=False)
    np.testing.assert_array_equal(again.test_x, ds.test_x)
    np.testing.assert_array_equal(again.test_y, ds.test_y)


def test_download_missing_into_first_dir_keeping_present_files(tmp_path, mnist_dir, mirror):
    target = tmp_path / "data" / "mnist"
    target.mkdir(parents=True)
    (target / "train-images-idx3-ubyte.gz").symlink_to(mnist_dir / "train-images-idx3-ubyte.gz")
    paths = ensure_files("mnist", tmp_path / "data", mirrors=[mirror + "missing/", mirror],
                         progress=False)
    assert paths == [target / f"{n}.gz" for n in NAMES]
    for name in NAMES[1:]:  # downloaded: byte-identical to the mirror's
        assert (target / f"{name}.gz").read_bytes() == (mnist_dir / f"{name}.gz").read_bytes()
    assert (target / f"{NAMES[0]}.gz").is_symlink()  # kept, not downloaded again
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in NAMES)


def test_download_off_message_names_files_dir_and_options(clean_env):
    with pytest.raises(ReconadError) as info:
        load_named("fashion-mnist", download=False)
    message = str(info.value)
    assert "\n" not in message
    for name in NAMES:
        assert f"{name}.gz" in message
    assert str(clean_env / "fashion-mnist") in message
    assert "--data-dir" in message and "RECONAD_DATA" in message


def test_all_mirrors_fail_gives_offline_message(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    with pytest.raises(ReconadError, match=rf"mnist not found and the download failed .*refused.*"
                       rf"put train-images-idx3-ubyte\.gz, .* in {re.escape(str(tmp_path))}/"
                       rf"mnist, or point --data-dir \(or the environment variable RECONAD_DATA\)"):
        ensure_files("mnist", tmp_path, mirrors=[dead], progress=False)
    assert not any((tmp_path / "mnist").iterdir())


def test_another_datasets_files_are_not_read_under_the_wrong_name(tmp_path, mnist_dir):
    link_all(mnist_dir, tmp_path / "d")  # MNIST lying directly in the data dir
    with pytest.raises(ReconadError, match=r"train-images-idx3-ubyte\.gz has md5 .* expected "
                       r"8d4fb7e6c68d591d4c3dfef9ec88bf0d: it is not fashion-mnist's .* own "
                       r"folder <data dir>/fashion-mnist/"):
        load_named("fashion-mnist", data_dir=tmp_path / "d", download=False)


def test_locally_altered_file_fails_content_md5(tmp_path, mnist_dir):
    folder = link_all(mnist_dir, tmp_path / "d")
    labels = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8] = (labels[8] + 1) % 10  # still a valid IDX file, one label changed
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(ReconadError, match=r"t10k-labels-idx1-ubyte\.gz has content md5 .*"
                       r"expected 27ae3e4e09519cfbb04c329615203637"):
        load_named("mnist", data_dir=folder, download=False)


def test_unknown_name():
    with pytest.raises(ReconadError, match=r"unknown dataset 'emnist'; use one of mnist, "
                                           r"fashion-mnist, kmnist"):
        get_source("emnist")


def test_checksum_table(mnist_dir):
    md5sums = dict(line.split()[::-1] for line in (mnist_dir / "MD5SUMS").read_text().splitlines())
    for f in SOURCES["mnist"].files:
        assert f.md5_content == md5sums[f.name]
    # The three .gz files that are byte-identical to the mirrors' match the published sums.
    for f in SOURCES["mnist"].files[1:]:
        assert hashlib.md5((mnist_dir / f.gz_name).read_bytes()).hexdigest() == f.md5_gz
    for source in SOURCES.values():
        assert [f.name for f in source.files] == NAMES and len(source.classes) == 10
        assert all(re.fullmatch(r"[0-9a-f]{32}", f.md5_gz) for f in source.files)
        assert all(m.endswith("/") for m in source.mirrors)

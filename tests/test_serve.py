"""``reconad serve``: every route over a real uvicorn server, the numbers of ``reconad score``,
every bad upload refused in one line while the service keeps serving, uploads limited while
they stream, concurrent clients batched, and the page in a real headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servefixtures import (
    BOUNDARY,
    FORM,
    multipart,
    png_bytes,
    post_files,
    request,
    running,
    send_streaming,
    write_files,
)
from tolerances import FLOAT64, TEXT, assert_close
from typer.testing import CliRunner

import reconad
from reconad.cli import app as cli_app
from reconad.cli import main
from reconad.data import iter_batches, open_collection
from reconad.detector import Detector
from reconad.engines import score_columns
from reconad.errors import ReconadError
from reconad.serve import MicroBatcher, create_app

LIMITS = {"max_file_bytes": 100_000, "max_images": 12, "max_pixels": 250_000}


@pytest.fixture(scope="module")
def detector_file(tiny_images, tmp_path_factory):
    """A dense AE on the bars of classes 0-2 (16x16 grey); class 3 and noise are anomalies."""
    x, y = tiny_images
    det = Detector(model={"kind": "dense", "hidden": [32], "latent": 4},
                   train={"epochs": 4, "batch_size": 32, "lr": 3e-3}).fit(x[y < 3])
    return det.save(tmp_path_factory.mktemp("serve") / "detector.safetensors")


@pytest.fixture(scope="module")
def images(tiny_images):
    """Upload files {name: bytes}: normal bars, anomalous bars, noise, and other encodings."""
    x, y = tiny_images
    rng = np.random.default_rng(1)
    files = {f"normal-{i}.png": png_bytes(x[y == i % 3][i, 0]) for i in range(4)}
    files.update({f"anomaly-{i}.png": png_bytes(x[y == 3][i, 0]) for i in range(3)})
    files["noise.png"] = png_bytes(rng.uniform(0, 1, (16, 16)))
    files["deep.png"] = png_bytes(x[y == 1][7, 0], mode="I;16")  # 16-bit grey
    files["alpha.png"] = png_bytes(x[y == 2][5, 0], mode="LA")  # grey + alpha
    return files


@pytest.fixture(scope="module")
def server(detector_file):
    app = create_app(detector_file, **LIMITS)
    with running(app) as port:
        yield port


def reference(detector_path, folder):
    """{id: (score, flag)} as ``reconad score``'s engine computes them (full precision)."""
    det = Detector.load(detector_path)
    stored = det.preprocessing_ or {}
    collection = open_collection(folder, det.image_shape_, resize=stored.get("resize"),
                                 grayscale=bool(stored.get("grayscale")))
    rows = {}
    for batch in iter_batches(collection, 256):
        columns = score_columns(det, collection, batch)
        rows.update(zip(columns["id"], zip(columns["score"].tolist(),
                                           columns["flag"].tolist(), strict=True), strict=True))
    return rows


def cli_score(detector_path, folder, out, *extra):
    """Run ``reconad score`` (in this process); returns its CSV rows by id."""
    result = CliRunner().invoke(cli_app, ["score", str(detector_path), str(folder), "--out",
                                          str(out), "--workers", "0", *map(str, extra)])
    assert result.exit_code == 0, result.output
    with out.open() as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def assert_one_line(answer, status, pattern):
    got, body = answer
    assert got == status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    assert re.search(pattern, body["error"]), body["error"]


# --------------------------------------------------------------------------- routes


def test_health_info_and_a_self_contained_page(server, detector_file):
    assert request(server, "GET", "/health") == (200, {"status": "ok", "detector": "serve0"})
    status, info = request(server, "GET", "/info")
    det = Detector.load(detector_file)
    assert status == 200
    assert info["input_shape"] == [1, 16, 16] and info["threshold"] == det.threshold_
    assert info["reconad_version"] == "0.1.0" and info["maps"] is True
    assert info["map"] == "per-pixel mse error" and info["batching"] is True
    assert {k: info["limits"][k] for k in LIMITS} == LIMITS
    status, page = request(server, "GET", "/")
    assert status == 200 and "<title>reconad serve</title>" in page
    # Nothing is fetched from anywhere: no external script, style, font or image.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert_one_line(request(server, "GET", "/nowhere"), 404, "the service answers GET /")


def test_scores_are_those_of_reconad_score(server, detector_file, images, tmp_path):
    folder = write_files(tmp_path / "upload", images)
    status, results = post_files(server, images.items())
    assert status == 200
    assert [r["id"] for r in results] == list(images)
    expected = reference(detector_file, folder)
    det = Detector.load(detector_file)
    for result in results:
        score, flag = expected[result["id"]]
        assert_close(result["score"], score, what=result["id"], tol=FLOAT64)
        assert result["flag"] == flag and result["threshold"] == det.threshold_
    assert {r["id"] for r in results if r["flag"]} >= {"anomaly-0.png", "noise.png"}
    assert not any(r["flag"] for r in results if r["id"].startswith("normal"))
    rows = cli_score(detector_file, folder, tmp_path / "scores.csv")
    for result in results:  # the command's CSV keeps 8 significant digits
        row = rows[result["id"]]
        assert_close(result["score"], float(row["score"]), what=result["id"], tol=TEXT)
        assert result["flag"] == int(row["flag"])


@pytest.fixture(scope="module")
def map_detector_file(tiny_images, tmp_path_factory):
    """A detector that scores by an anomaly map (score.map: smoothed, standardised)."""
    x, y = tiny_images
    det = Detector(model={"kind": "conv", "channels": [4], "bottleneck": False},
                   train={"epochs": 2, "batch_size": 32},
                   score={"map": "squared", "smooth_sigma": 1.0, "standardize": True,
                          "reduction": "max"}).fit(x[y < 3])
    return det.save(tmp_path_factory.mktemp("serve-map") / "detector.safetensors")


@pytest.mark.parametrize("which", ["error map", "anomaly map"])
def test_heatmaps_are_those_of_reconad_score_maps(server, detector_file, map_detector_file,
                                                  images, tmp_path, which):
    path = detector_file if which == "error map" else map_detector_file
    folder = write_files(tmp_path / "upload", images)
    expected = reference(path, folder)
    with contextlib.ExitStack() as stack:
        port = server if which == "error map" else stack.enter_context(
            running(create_app(path)))
        status, with_maps = post_files(port, images.items(), query="?maps=1")
        assert status == 200
        _, plain = post_files(port, images.items())
        info = request(port, "GET", "/info")[1]
    assert info["map"] == ("per-pixel mse error" if which == "error map" else "squared")
    cli_score(path, folder, tmp_path / "scores.csv", "--maps", tmp_path / "maps")
    for result, without in zip(with_maps, plain, strict=True):
        assert result["score"] == without["score"] and result["flag"] == without["flag"]
        assert_close(result["score"], expected[result["id"]][0], what=result["id"], tol=FLOAT64)
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"]))))
        written = np.asarray(Image.open(tmp_path / "maps" / result["id"]))
        assert served.shape == (16, 16, 3)
        np.testing.assert_array_equal(served, written)  # one request = one colour scale
        assert result["map_scale"] == with_maps[0]["map_scale"]


def test_the_detectors_resize_and_grey_conversion_apply(detector_file, tiny_images, tmp_path):
    det = Detector.load(detector_file)
    det.preprocessing_ = {"resize": [16, 16], "grayscale": True}  # as reconad run stores it
    path = det.save(tmp_path / "resizing.safetensors")
    x, y = tiny_images
    bars = np.kron(x[y == 0][0, 0], np.ones((2, 2)))[:, :, None] * np.array([0.9, 0.5, 0.2])
    rgb = io.BytesIO()
    Image.fromarray(np.round(bars * 255).astype(np.uint8)).save(rgb, format="JPEG")
    files = {"colour.jpg": rgb.getvalue(), "rgba.png": png_bytes(bars[:30, :24], mode="RGBA")}
    folder = write_files(tmp_path / "upload", files)
    with running(create_app(path)) as port:
        status, results = post_files(port, files.items())
        assert request(port, "GET", "/info")[1]["resize"] == [16, 16]
    assert status == 200
    expected = reference(path, folder)
    for result in results:
        assert_close(result["score"], expected[result["id"]][0], what=result["id"], tol=FLOAT64)


# --------------------------------------------------------------------------- bad uploads

BAR = np.zeros((16, 16))
BAR[6:8, 2:14] = 0.9
PNG = png_bytes(BAR)
PART = ('--{b}\r\nContent-Disposition: form-data; name="{field}"{filename}\r\n\r\n{data}\r\n'
        '--{b}--\r\n')


def _part(field="file", filename="", data=""):
    return PART.format(b=BOUNDARY, field=field, filename=filename, data=data).encode()


BAD_UPLOADS = {
    "not an image": ([("notes.png", b"just some text")], 415, r"'notes.png' is not an image"),
    "cut short": ([("cut.png", PNG[:len(PNG) // 2])], 415, r"'cut.png' could not be decoded"),
    "colour for a grey detector": ([("rgb.png", png_bytes(np.stack([BAR] * 3, -1)))], 422,
                                   r"colour image .* --grayscale"),
    "size it does not resize": ([("big.png", png_bytes(np.zeros((20, 24))))], 422,
                                r"'big.png' is 20x24 .* send 16x16 images .* --resize 16 16"),
    "file over the byte limit": ([("huge.png", PNG + b"\0" * 100_000)], 413,
                                 r"'huge.png' is larger than 100000 bytes"),
    "decompression bomb": ([("bomb.png", png_bytes(np.zeros((1000, 1000))))], 413,
                           r"'bomb.png' is 1000x1000 pixels, over the 250000"),
    "too many files": ([(f"{i}.png", PNG) for i in range(13)], 413, r"more than 12 images"),
    "wrong field": ([("a.png", PNG)], 400, r"unexpected form field 'image'"),
}
RAW_BODIES = {
    "empty form": (f"--{BOUNDARY}--\r\n".encode(), FORM, 400, r"the form holds no image"),
    "empty file input": (_part(filename='; filename=""'), FORM, 400, r"holds no image"),
    "text in the file field": (_part(data="hello"), FORM, 400, r"holds text, not a file"),
    "not a form": (b'{"image": 1}', "application/json", 415,
                   r"application/json, not multipart/form-data"),
    "no boundary": (b"x", "multipart/form-data", 400, r"no boundary"),
    "malformed form": (b"garbage without boundaries", FORM, 400, r"malformed|no image"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_a_bad_upload_is_one_line_and_the_service_goes_on(server, case):
    files, status, pattern = BAD_UPLOADS[case]
    field = "image" if case == "wrong field" else "file"
    assert_one_line(post_files(server, files, field=field), status, pattern)
    assert request(server, "GET", "/health")[0] == 200
    assert post_files(server, [("ok.png", PNG)])[0] == 200


@pytest.mark.parametrize("case", list(RAW_BODIES))
def test_a_bad_body_is_one_line_and_the_service_goes_on(server, case):
    body, content_type, status, pattern = RAW_BODIES[case]
    assert_one_line(request(server, "POST", "/score", body, content_type), status, pattern)
    assert request(server, "GET", "/health")[0] == 200


def test_a_bad_query_is_one_line(server):
    answer = request(server, "POST", "/score?maps=maybe", multipart([("a.png", PNG)]))
    assert_one_line(answer, 422, r"query.maps: .* e.g. POST /score\?maps=1")


def test_a_100_mb_upload_is_refused_as_it_streams(server):
    chunk, total = b"\0" * 2**16, 100 * 2**20
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    head = "POST /score HTTP/1.1\r\nHost: test\r\nContent-Type: {}\r\n{}\r\n"
    body = (part.encode(), *(chunk for _ in range(total // len(chunk))))
    # Declared larger than a request may be: refused before one byte of it is sent (curl
    # waits for "100 Continue" before a large body, and gets the answer instead).
    declared = head.format(FORM, f"Content-Length: {total + len(part)}\r\n"
                                 "Expect: 100-continue\r\n").encode()
    status, answer, sent = send_streaming(server, declared, body)
    assert (status, sent) == (413, 0)
    assert re.search(r"over the \d+ bytes one request may hold", answer["error"])
    # Undeclared (chunked): refused once the file passes the byte limit, long before its end.
    chunked = head.format(FORM, "Transfer-Encoding: chunked\r\n").encode()
    status, answer, sent = send_streaming(server, chunked, (
        b"%x\r\n%s\r\n" % (len(c), c) for c in body))
    assert status == 413 and sent < 32 * 2**20, sent  # socket buffers hold a few MB
    assert request(server, "GET", "/health")[0] == 200


def test_a_refused_upload_is_never_held_in_memory(detector_file):
    """100 MB of one file through the app: refused at the byte limit, the rest read and
    dropped (so a client that sends before it reads gets the answer), memory flat."""
    app = create_app(detector_file, max_file_bytes=2**20, max_images=200)
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"'
            '\r\n\r\n').encode()
    chunks = [head, *(b"\0" * 2**20 for _ in range(100)), f"\r\n--{BOUNDARY}--\r\n".encode()]
    total = sum(map(len, chunks))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/score", "raw_path": b"/score",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", FORM.encode()),
                         (b"content-length", str(total).encode())]}
    consumed, sent = [0], []

    async def receive():
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        consumed[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    tracemalloc.start()
    try:
        asyncio.run(app(scope, receive, send))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        app.state.service.close()
    assert sent[0]["status"] == 413 and b"larger than 1048576 bytes" in sent[1]["body"]
    assert consumed[0] == total
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB held for a 100 MB upload"


# --------------------------------------------------------------------------- batching


def test_concurrent_clients_are_batched_and_answered_right(detector_file, tiny_images):
    x, _ = tiny_images
    det = Detector.load(detector_file)
    app = create_app(detector_file, batch_wait_ms=100)
    picks = [list(range(i * 7, i * 7 + 1 + i % 3)) for i in range(16)]
    bodies = [multipart((f"{j}.png", png_bytes(x[j, 0])) for j in pick) for pick in picks]
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(png_bytes(x[j, 0]))), np.float32)
                        [None] / 255 for j in range(len(x))])
    answers, start = [None] * 16, threading.Barrier(16)

    def client(i):
        start.wait()
        answers[i] = request(port, "POST", "/score", bodies[i])

    with running(app) as port:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        scored = request(port, "GET", "/info")[1]["scored"]
    for pick, (status, results) in zip(picks, answers, strict=True):
        assert status == 200
        assert [r["id"] for r in results] == [f"{j}.png" for j in pick]
        expected = det.anomaly_score(decoded[pick])
        assert_close([r["score"] for r in results], expected, what="scores", tol=FLOAT64)
    assert scored["images"] == sum(map(len, picks))
    assert scored["model_passes"] < 16  # requests shared model passes


def _stand_in(calls):
    def run(images, maps):
        calls.append((len(images), maps))
        return images.sum(axis=1).astype(float), (images * 2 if maps else None)
    return run


@pytest.mark.parametrize("batching, passes", [(True, [(6, False), (2, True)]),
                                              (False, [(1, False)] * 4 + [(2, False)]
                                               + [(1, True)] * 2)])
def test_the_batcher_gathers_requests_by_output(batching, passes):
    calls = []

    async def go():
        batcher = MicroBatcher(_stand_in(calls), max_batch=8, wait_s=0.05, batching=batching)
        jobs = [batcher.score(np.full((n, 2), i, float), maps)
                for i, (n, maps) in enumerate([(1, False), (1, True), (1, False), (1, True),
                                               (1, False), (2, False), (1, False)])]
        out = await asyncio.gather(*jobs)
        batcher.close()
        return out

    out = asyncio.run(go())
    assert [o[0].tolist() for o in out] == [[0], [2], [4], [6], [8], [10, 10], [12]]
    assert [o[1] is not None for o in out] == [False, True, False, True, False, False, False]
    assert sorted(calls) == sorted(passes)


def test_the_batcher_keeps_to_max_batch_and_passes_errors_on():
    calls = []

    async def go():
        batcher = MicroBatcher(_stand_in(calls), max_batch=3, wait_s=0.01)
        out = await asyncio.gather(*(batcher.score(np.ones((2, 2)), False) for _ in range(3)))
        batcher.run = lambda images, maps: 1 / 0
        failed = await asyncio.gather(batcher.score(np.ones((1, 2)), False),
                                      return_exceptions=True)
        batcher.close()
        return out, failed

    out, failed = asyncio.run(go())
    assert calls == [(2, False)] * 3 and len(out) == 3
    assert isinstance(failed[0], ZeroDivisionError)


# --------------------------------------------------------------------------- setup errors


def test_settings_and_detector_errors_are_one_line(detector_file, tmp_path):
    with pytest.raises(ReconadError, match=r"invalid value for --max-images .* greater"):
        create_app(detector_file, max_images=0)
    with pytest.raises(ReconadError, match=r"unknown serve option 'max_image'"):
        create_app(detector_file, max_image=3)
    with pytest.raises(ReconadError, match=r"missing.safetensors"):
        create_app(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("problem", ["missing detector", "port in use"])
def test_reconad_serve_refuses_in_one_line(detector_file, tmp_path, problem, monkeypatch,
                                           capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if problem == "port in use" else 0
        path = tmp_path / "missing.safetensors" if problem == "missing detector" else detector_file
        monkeypatch.setattr(sys, "argv", ["reconad", "serve", str(path), "--port", str(port)])
        with pytest.raises(SystemExit) as exit_info:
            main()
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    pattern = "missing.safetensors" if problem == "missing detector" else "cannot listen on"
    assert len(errors) == 1 and re.search(pattern, errors[0]), errors


def test_workers_processes_serve_the_same_scores(detector_file, images):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    src = str(Path(reconad.__file__).resolve().parents[1])  # the reconad under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *filter(None, [os.environ.get("PYTHONPATH")])])}
    process = subprocess.Popen([sys.executable, "-m", "reconad", "serve", str(detector_file),
                                "--port", str(port), "--workers", "2", "--torch-threads",
                                "1", "--no-access-log"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # three processes import torch: slow on a busy box
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if request(port, "GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "reconad serve --workers 2 did not start"
                time.sleep(0.2)
        status, results = post_files(port, images.items())
        assert status == 200
        det = Detector.load(detector_file)
        decoded = [np.asarray(Image.open(io.BytesIO(images[r["id"]])).convert("L"))
                   for r in results if r["id"].startswith(("normal", "anomaly"))]
        expected = det.anomaly_score(np.stack(decoded)[:, None].astype(np.float32) / 255)
        got = [r["score"] for r in results if r["id"].startswith(("normal", "anomaly"))]
        assert_close(got, expected, what="scores of a worker process", tol=FLOAT64)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


# --------------------------------------------------------------------------- the page


@pytest.mark.browser
def test_the_page_scores_dropped_files_beside_their_heatmaps(browser, server, detector_file,
                                                              images, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = write_files(tmp_path / "upload", images)
    expected = reference(detector_file, folder)
    bad = write_files(tmp_path / "bad", {"letter.png": b"not an image at all"})
    browser.get(f"http://127.0.0.1:{server}/")
    WebDriverWait(browser, 30).until(
        lambda b: "threshold" in b.find_element(By.ID, "info").text)
    paths = [folder / name for name in images] + [bad / "letter.png"]
    browser.find_element(By.ID, "files").send_keys("\n".join(map(str, paths)))
    rows_js = ("return Array.from(document.querySelectorAll('tr.result')).map(r => ({"
               "id: r.dataset.id, score: r.dataset.score, flag: r.dataset.flag, "
               "error: r.dataset.error, scale: r.dataset.scale, text: r.innerText, "
               "images: Array.from(r.querySelectorAll('img')).map(i => [i.className, "
               "i.complete, i.naturalWidth])}));")
    WebDriverWait(browser, 60).until(lambda b: len(b.execute_script(rows_js)) == len(paths) and all(
        r["score"] or r["error"] for r in b.execute_script(rows_js)))
    rows = {r["id"]: r for r in browser.execute_script(rows_js)}
    for name, (score, flag) in expected.items():
        row = rows[name]
        assert row["error"] is None, row
        assert_close(float(row["score"]), score, what=name, tol=FLOAT64)
        assert int(row["flag"]) == flag
        assert ("anomaly" if flag else "normal") in row["text"]
        assert f"{score:.6g}"[:5] in row["text"]
        kinds = {cls.split()[-1]: (done and width > 0) for cls, done, width in row["images"]}
        assert kinds == {"original": True, "heatmap": True}, row["images"]
    assert re.search(r"'letter.png' is not an image", rows["letter.png"]["error"])
    # The files dropped together share one colour scale (the refused one set apart).
    assert len({rows[name]["scale"] for name in expected}) == 1
    sources = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]'))"
        ".map(e => e.getAttribute('src') || e.getAttribute('href'));")
    assert all(s.startswith(("blob:", "data:image/png;base64,")) for s in sources), sources

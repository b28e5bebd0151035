"""``reconad serve`` under load: throughput, latency and memory, with batching on and off.

The real service runs in a subprocess (``python -m reconad serve DETECTOR --workers N
--no-access-log``) with the detector of ``reconad run default --set train.epochs=1`` (the
``default`` preset's model and score, test-time copies included; ``--quick``: on a subset).
:data:`CLIENTS` clients (one asyncio task each, one keep-alive connection each, in this process)
post MNIST test images as 28x28 PNGs, 1 to 4 per request in turn, for ``DURATION`` seconds
(``--quick``: 10), once with batching on and once with ``--no-batching``, side by side in one
run. Recorded per mode:

- errors: any answer that is not 200 with one result per image, and any score that differs
  from the detector's own score of the same image (``Detector.anomaly_score`` in this
  process, to 1e-9): ``zero_errors`` is true only when there are none at all;
- images/s and requests/s over the measured window; p50/p95/p99 latency of a request (sent
  to answer read);
- the mean images per model pass (the server's ``/info`` counts);
- RSS of the server's processes (the uvicorn process and its workers, summed; VmRSS sampled
  every 0.5 s): the peak over the first and the last 10 s of the load, so growth shows.

The clients share the machine's cores with the server (here 2 cores, shared with other work
too), so absolute numbers are lower bounds; the on/off ratio is measured under the same load.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .common import Context

CLIENTS = 32
DURATION, QUICK_DURATION = 60.0, 10.0
WINDOW = 10.0  # seconds at the start and the end of the load whose peak RSS is compared
PER_REQUEST = (1, 2, 3, 4)  # images per request, in turn
N_IMAGES = 256  # distinct MNIST test images posted
BOUNDARY = "reconad-bench"
QUICK_RUN = ["data.max_train=3000", "data.max_test=1000"]


def serve(ctx: Context) -> tuple[dict, list[dict]]:
    """The benchmark: see the module docstring."""
    work = Path(tempfile.mkdtemp(prefix="reconad-serve-"))
    try:
        return _measure(ctx, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(ctx: Context, work: Path) -> tuple[dict, list[dict]]:
    from PIL import Image

    import reconad
    from reconad.data import load_named
    from reconad.detector import Detector

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(  # the reconad this process imports
        [str(Path(reconad.__file__).resolve().parents[1]),
         *filter(None, [os.environ.get("PYTHONPATH")])])}
    sets = ["train.epochs=1", *(QUICK_RUN if ctx.quick else []), *ctx.sets]
    if ctx.data_dir:
        sets.append(f"data.data_dir={ctx.data_dir}")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reconad", "run", "default", "--out",
                    str(work / "run"), "--quiet", *(a for s in sets for a in ("--set", s))],
                   env=env, check=True, capture_output=True)
    train_seconds = time.perf_counter() - started
    detector = work / "run" / "detector.safetensors"
    digits = load_named("mnist", ctx.data_dir).test_x[:N_IMAGES]  # uint8 (N, 1, 28, 28)
    pngs = []
    for image in digits:
        buffer = io.BytesIO()
        Image.fromarray(image[0]).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    expected = Detector.load(detector, device="cpu").anomaly_score(digits)
    requests = _requests(pngs)
    duration = QUICK_DURATION if ctx.quick else DURATION
    rows = []
    for batching in (True, False):
        row = _load(detector, env, requests, expected, duration, ctx.workers, batching)
        rows.append(row)
        print(json.dumps(row), flush=True)
    on, off = rows
    first, last = on["rss_peak_first_10s_mib"], on["rss_peak_last_10s_mib"]
    headline = {
        "zero_errors": all(r["errors"] == 0 for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "images_per_s": on["images_per_s"], "images_per_s_no_batching": off["images_per_s"],
        "batching_speedup": round(on["images_per_s"] / max(off["images_per_s"], 1e-9), 2),
        "requests_per_s": on["requests_per_s"],
        "requests_per_s_no_batching": off["requests_per_s"],
        "p50_ms": on["p50_ms"], "p95_ms": on["p95_ms"],
        "p50_ms_no_batching": off["p50_ms"], "p95_ms_no_batching": off["p95_ms"],
        "mean_images_per_pass": on["mean_images_per_pass"],
        "rss_peak_first_10s_mib": on["rss_peak_first_10s_mib"],
        "rss_peak_last_10s_mib": on["rss_peak_last_10s_mib"],
        "rss_last_over_first": round(last / first, 3) if first and last else None,
        "clients": CLIENTS, "seconds_per_mode": duration, "workers": ctx.workers,
        "images_per_request": "1-4 in turn (mean 2.5), 28x28 PNG",
        "detector_seconds": round(train_seconds, 1),
        "note": "clients and server share this machine's cores (2, shared with other work): "
                "absolute numbers are lower bounds; on/off were measured side by side",
    }
    return headline, rows


def _requests(pngs: list[bytes]) -> list[tuple[bytes, list[int]]]:
    """Ready-made HTTP requests: (bytes, indices of the images in it), 1-4 images each."""
    out, position = [], 0
    for i in range(len(pngs)):
        count = PER_REQUEST[i % len(PER_REQUEST)]
        picks = [(position + j) % len(pngs) for j in range(count)]
        position += count
        body = b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{j}.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + pngs[j] + b"\r\n"
            for j in picks) + f"--{BOUNDARY}--\r\n".encode()
        head = (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        out.append((head + body, picks))
    return out


def _load(detector: Path, env: dict, requests: list, expected: np.ndarray, duration: float,
          workers: int, batching: bool) -> dict:
    """One mode: start the server, warm it up, drive it, stop it; the row of numbers."""
    port = _free_port()
    command = [sys.executable, "-m", "reconad", "serve", str(detector), "--port", str(port),
               "--workers", str(workers), "--no-access-log",
               "--batching" if batching else "--no-batching"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        _wait_healthy(port, server)
        asyncio.run(_drive(port, requests, 3.0))  # warm-up: first passes, allocations
        before = _info(port)["scored"]
        sampler = _RssSampler(server.pid)
        sampler.start()
        answers, seconds = asyncio.run(_drive(port, requests, duration))
        sampler.stop()
        after = _info(port)["scored"]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    errors, images = 0, 0
    latencies = []
    for index, status, body, latency in answers:
        latencies.append(latency)
        picks = requests[index][1]
        images += len(picks)
        try:
            results = json.loads(body) if status == 200 else None
            got = [r["score"] for r in results]
            ok = (len(got) == len(picks)
                  and np.allclose(got, expected[picks], rtol=1e-9, atol=1e-12))
        except (TypeError, ValueError, KeyError):
            ok = False
        errors += not ok
    ms = np.asarray(latencies) * 1000
    passes = after["model_passes"] - before["model_passes"]
    return {
        "mode": "batching" if batching else "no batching", "workers": workers,
        "seconds": round(seconds, 1), "requests": len(answers), "images": images,
        "errors": errors, "requests_per_s": round(len(answers) / seconds, 1),
        "images_per_s": round(images / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        # one worker's counts with --workers N (the /info answered by it)
        "mean_images_per_pass": round((after["images"] - before["images"]) / max(passes, 1), 1),
        **sampler.summary(seconds),
    }


async def _drive(port: int, requests: list, duration: float) -> tuple[list, float]:
    """:data:`CLIENTS` clients posting in turn for ``duration`` s; (answers, seconds) with an
    answer ``(request index, status, body, latency s)`` per request completed in time."""
    answers: list = []
    start = time.perf_counter()
    deadline = start + duration

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        index = k * 7
        try:
            while time.perf_counter() < deadline:
                index = (index + 1) % len(requests)
                sent = time.perf_counter()
                writer.write(requests[index][0])
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                answers.append((index, status, body, time.perf_counter() - sent))
        finally:
            writer.close()

    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    return answers, time.perf_counter() - start


class _RssSampler(threading.Thread):
    """VmRSS of a process and its descendants, summed, every 0.5 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self._stop_event = pid, [], threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        self.start_time = time.perf_counter()
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter() - self.start_time, _tree_rss(self.pid)))
            self._stop_event.wait(0.5)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def summary(self, seconds: float) -> dict:
        def peak(low: float, high: float) -> float:
            values = [rss for t, rss in self.samples if low <= t <= high]
            return round(max(values) / 2**20, 1) if values else None

        return {"rss_peak_first_10s_mib": peak(0, WINDOW),
                "rss_peak_last_10s_mib": peak(seconds - WINDOW, seconds + 1),
                "rss_peak_mib": peak(0, seconds + 1), "rss_samples": len(self.samples)}


def _tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and every process below it (0 for one that has gone)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines()
                          if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _info(port: int) -> dict:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/info")
    info = json.loads(connection.getresponse().read())
    connection.close()
    return info


def _wait_healthy(port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"reconad serve exited: {server.stderr.read().decode()[-2000:]}")
        try:
            _info(port)
            return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"reconad serve did not answer within {timeout:.0f} s")

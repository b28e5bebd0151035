"""Micro-batching: the images of concurrent requests scored together, in one model pass.

Why it pays: the detector runs its network in fixed-size passes
(:func:`reconad.score.images_per_pass`: 256 MNIST images, the last pass padded), so a request
of one image costs a whole pass of the network (for the ``default`` detector about half of
what 256 images cost; the rest, its latent kNN search, grows with the real images). Alone, N
concurrent requests take N passes; gathered, one. Throughput then grows with the number of
clients, up to a pass's size, for the price of the wait (``batch_wait_ms``, 5 ms by default)
before each pass; latency under load falls too, as requests queue behind fewer passes
(``benchmarks/run.py serve``: 7.9x the images/s with 32 clients). Scores do not change: an
image's score does not depend on the batch it is scored in (fixed-size passes), so a request
gets the same numbers alone or gathered.

One model pass runs at a time, in one worker thread (torch uses its own threads inside a
pass), so the event loop keeps reading requests meanwhile; the requests that arrive during a
pass form the next batch. With batching off, each request is its own pass (the same thread).

>>> import asyncio
>>> def run(images, maps):  # (N, ...) -> (scores, maps or None), here a stand-in model
...     return images.sum(axis=1), None
>>> async def two_requests():
...     batcher = MicroBatcher(run, max_batch=8, wait_s=0.001)
...     first, second = await asyncio.gather(batcher.score(np.ones((2, 3)), False),
...                                          batcher.score(np.zeros((1, 3)), False))
...     batcher.close()
...     return first[0].tolist(), second[0].tolist(), batcher.passes
>>> asyncio.run(two_requests())
([3.0, 3.0], [0.0], 1)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

RunPass = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class _Job:
    images: np.ndarray  # (n, C, H, W) of one request
    maps: bool
    future: asyncio.Future


class MicroBatcher:
    """Gathers requests' images for ``wait_s`` (up to ``max_batch`` images) and scores them
    with one call of ``run(images, maps) -> (scores (N,), maps (N, H, W) or None)`` in a worker
    thread. Requests that want maps are gathered apart from those that do not.

    Args:
        run: the model pass.
        max_batch: most images gathered into one pass (a larger request is a pass alone).
        wait_s: how long a batch waits for more requests (0: only what is already queued).
        batching: False = one request per pass, no waiting.
    """

    def __init__(self, run: RunPass, max_batch: int, wait_s: float,
                 batching: bool = True) -> None:
        self.run, self.max_batch, self.wait_s, self.batching = run, max_batch, wait_s, batching
        self.passes = 0  # model passes run so far
        self.images = 0  # images scored so far
        self._queue: deque[_Job] = deque()
        self._draining = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconad-model")

    async def score(self, images: np.ndarray, maps: bool) -> tuple[np.ndarray,
                                                                    np.ndarray | None]:
        """One request's images (n, C, H, W) -> (scores (n,), maps (n, H, W) or None)."""
        loop = asyncio.get_running_loop()
        job = _Job(images, maps, loop.create_future())
        self._queue.append(job)
        if not self._draining:  # the first request of a quiet spell starts the draining
            self._draining = True
            loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        """Run passes until the queue is empty."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self.batching and self.wait_s > 0 and self._queued() < self.max_batch:
                    await asyncio.sleep(self.wait_s)  # let concurrent requests join
                jobs = self._take()
                images = np.concatenate([j.images for j in jobs])
                try:
                    scores, maps = await loop.run_in_executor(self._thread, self.run, images,
                                                              jobs[0].maps)
                except Exception as exc:  # every request of the pass gets the error
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self.passes += 1
                self.images += len(images)
                start = 0
                for job in jobs:
                    stop = start + len(job.images)
                    if not job.future.done():  # a client that went away is not answered
                        job.future.set_result((scores[start:stop],
                                               None if maps is None else maps[start:stop]))
                    start = stop
        finally:
            self._draining = False

    def _queued(self) -> int:
        return sum(len(j.images) for j in self._queue)

    def _take(self) -> list[_Job]:
        """The oldest request and, batching, the next ones that want the same output, while
        they fit in ``max_batch`` images."""
        first = self._queue.popleft()
        jobs, total = [first], len(first.images)
        if not self.batching:
            return jobs
        kept: deque[_Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.maps == first.maps and total + len(job.images) <= self.max_batch:
                jobs.append(job)
                total += len(job.images)
            else:
                kept.append(job)
        self._queue.extendleft(reversed(kept))
        return jobs

    def close(self) -> None:
        """Stop the model thread (after the pass it is running)."""
        self._thread.shutdown(wait=True)

"""``reconad score`` in one process: rows written as they are scored, memory independent of N.

Each image gives one row ``id,label,class,score,flag`` (:data:`COLUMNS`): its stable id (see
:mod:`reconad.data`), its label and class name where the input has them (else empty), the
anomaly score (higher = more anomalous) and the flag (1 = anomaly, score > threshold). Rows go
to a temporary file renamed into place at the end (:func:`reconad.files.atomic_file`), or to
stdout. The gallery's top-k and bottom-k images are kept in two heaps of k entries.
"""

from __future__ import annotations

import csv
import heapq
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from reconad.data import DEFAULT_BATCH, Batch, Collection, iter_batches
from reconad.errors import ReconadError
from reconad.files import atomic_file
from reconad.report import gallery, heatmap_scale, write_heatmaps

COLUMNS = ("id", "label", "class", "score", "flag")


@dataclass
class ScoreSummary:
    """What a scoring pass saw: image count, flagged count, skipped files ``(id, reason)``."""

    n_scored: int = 0
    n_flagged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def score_columns(detector: Any, collection: Collection, batch: Batch,
                  scores: np.ndarray | None = None) -> dict[str, Any]:
    """One batch's rows as columns: ids, labels (None = none), classes (None), scores, flags.

    Args:
        detector: a fitted :class:`reconad.detector.Detector`.
        collection: the collection ``batch`` came from (for ids and labels).
        batch: decoded images.
        scores: the batch's scores if already computed (else the detector scores it).

    Returns:
        ``{"id": [str], "label": [int | None], "class": [str | None], "score": float64 (n,),
        "flag": int64 (n,)}``; flag = score > ``detector.threshold_`` (:meth:`Detector.flag`).
    """
    if not len(batch.index):
        empty = np.empty(0)
        return {"id": [], "label": [], "class": [], "score": empty, "flag": empty.astype(int)}
    ids, labels, classes = collection.describe(batch.index)
    if scores is None:
        scores = detector.anomaly_score(batch.x)
    scores = np.asarray(scores, dtype=np.float64)
    return {
        "id": ids,
        "label": [None if v < 0 else v for v in labels.tolist()],
        "class": [c or None for c in classes],
        "score": scores,
        "flag": (scores > detector.threshold_).astype(np.int64),
    }


def csv_rows(columns: dict[str, Any]) -> Iterator[tuple]:
    """CSV rows (in :data:`COLUMNS` order) of :func:`score_columns`' output; None -> ""."""
    for image_id, label, name, score, flag in zip(*(columns[k] for k in COLUMNS), strict=True):
        yield image_id, "" if label is None else label, name or "", f"{score:.8g}", int(flag)


def score_collection(
    detector: Any,
    collection: Collection,
    out: Path | None = None,
    batch_size: int = DEFAULT_BATCH,
    workers: int = 0,
    skip_bad: bool = False,
    gallery: Path | None = None,
    gallery_k: int = 16,
    title: str = "highest and lowest scores",
    maps: Path | None = None,
) -> ScoreSummary:
    """Score every image of ``collection`` batch by batch and write one CSV row per image.

    Args:
        detector: a fitted Detector.
        collection: the images (:func:`reconad.data.open_collection`).
        out: CSV to write (atomically); None = stdout.
        batch_size: images decoded and scored at once (bounds the memory).
        workers: processes decoding image files.
        skip_bad: record unreadable image files in the summary and go on, instead of stopping
            at the first with its error.
        gallery: PNG of the ``gallery_k`` highest and lowest scored images, or None.
        gallery_k: images per block of the gallery.
        title: the gallery's title.
        maps: a folder for one heat-map PNG of each image's anomaly map
            (:meth:`Detector.anomaly_maps`), named after its id; the colours span one scale
            for all images, set by the first batch (its 0.1 and 99.9 percentiles).

    Returns:
        The counts and the skipped files.

    Raises:
        ReconadError: an unreadable image (unless ``skip_bad``), a shape the detector refuses.
    """
    summary = ScoreSummary()
    extremes = Extremes(gallery_k) if gallery is not None else None
    scale: tuple[float, float] | None = None
    with csv_target(out) as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for batch in iter_batches(collection, batch_size, workers):
            for position, reason in batch.bad:
                if not skip_bad:
                    raise ReconadError(reason)
                summary.skipped.append((collection.ids(np.array([position]))[0], reason))
            batch_maps = scores = None
            if maps is not None and len(batch.index):  # one model pass for maps and scores
                batch_maps, scores = detector.anomaly_maps_and_scores(batch.x)
            columns = score_columns(detector, collection, batch, scores)
            writer.writerows(csv_rows(columns))
            summary.n_scored += len(batch.index)
            summary.n_flagged += int(columns["flag"].sum())
            if extremes is not None:
                extremes.add(columns, batch.x)
            if batch_maps is not None:
                scale = _write_maps(batch_maps, columns["id"], maps, scale)
    if extremes is not None:
        extremes.draw(gallery, title)
    return summary


def _write_maps(batch_maps: np.ndarray, ids: list[str], folder: Path,
               scale: tuple[float, float] | None) -> tuple[float, float]:
    """Write the heat-maps (n, H, W) of one batch; returns the colour scale (fixed by the
    first batch)."""
    if scale is None:
        scale = heatmap_scale(batch_maps)
    write_heatmaps(batch_maps, ids, folder, *scale)
    return scale


@contextmanager
def csv_target(out: Path | None) -> Iterator[IO[str]]:
    """A text handle on a temporary file renamed to ``out`` at the end, or stdout (None)."""
    if out is None:
        yield sys.stdout
        return
    with atomic_file(out) as tmp, tmp.open("w", newline="") as handle:
        yield handle


class Extremes:
    """The k highest and k lowest scored images seen so far (two heaps of k entries).

    Ties and NaN follow :func:`reconad.report.select_extremes`: NaN counts as the highest
    score, and the bottom block never repeats an image of the top block.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._top: list[tuple] = []  # min-heap of (key, seq, ...): the smallest of the top k
        self._bottom: list[tuple] = []  # min-heap of (-key, -seq, ...): the largest kept
        self._seq = 0

    def add(self, columns: dict[str, Any], images: np.ndarray) -> None:
        """Offer a batch: :func:`score_columns`' output and its float images (n, C, H, W)
        (or any per-image payloads, see :meth:`draw`)."""
        for j, score in enumerate(columns["score"].tolist()):
            key = math.inf if math.isnan(score) else score
            item = (score, columns["id"][j], columns["class"][j] or columns["label"][j])
            self._seq += 1
            self._push(self._top, (key, self._seq), item, images[j])
            self._push(self._bottom, (-key, -self._seq), item, images[j])

    def _push(self, heap: list, order: tuple, item: tuple, image: np.ndarray) -> None:
        if len(heap) < self.k:
            heapq.heappush(heap, (order, item, image.copy()))
        elif order > heap[0][0]:
            heapq.heapreplace(heap, (order, item, image.copy()))

    def draw(self, path: Path, title: str,
             decode: Callable[[list[Any]], np.ndarray] | None = None) -> Path:
        """The gallery PNG (:func:`reconad.report.gallery`) of the images kept.

        ``decode`` turns the kept payloads into images (n, C, H, W) when :meth:`add` was given
        something else than images (the Ray engine keeps positions and decodes 2k images).
        """
        top = sorted(self._top, key=lambda e: e[0], reverse=True)
        shown = {e[0][1] for e in top}
        bottom = [e for e in sorted(self._bottom, key=lambda e: e[0], reverse=True)
                  if -e[0][1] not in shown]
        kept = top + bottom
        if not kept:
            return gallery(np.zeros((0, 1, 1, 1)), np.zeros(0), path, k=self.k, title=title)
        labels = [e[1][2] for e in kept]
        payloads = [e[2] for e in kept]
        images = decode(payloads) if decode is not None else np.stack(payloads)
        return gallery(images, np.array([e[1][0] for e in kept]), path,
                       k=self.k, labels=None if all(v is None for v in labels) else
                       [-1 if v is None else v for v in labels],
                       ids=[e[1][1] for e in kept], title=title)

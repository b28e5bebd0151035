"""What the service does, apart from HTTP: a loaded detector scoring uploaded files.

:class:`ScoringService` decodes uploads in a small thread pool (``decode_threads``: bounds how
many full-size decoded images exist at once), scores them through the
:class:`~reconad.serve.MicroBatcher` and returns one result per file, ``{id, score, flag,
threshold}`` (+ ``heatmap_png``, ``map_scale`` with maps), the numbers ``reconad score`` gives
for the same files.
"""

from __future__ import annotations

import asyncio
import base64
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from reconad import __version__
from reconad.detector import Detector
from reconad.report import heatmap_pngs, heatmap_scale
from reconad.score import images_per_pass
from reconad.serve._batcher import MicroBatcher
from reconad.serve._images import Preparation, decode_upload
from reconad.serve._settings import ServeSettings, detector_name
from reconad.serve._uploads import Upload


class ScoringService:
    """A detector behind the limits and the batcher.

    Args:
        detector: a fitted :class:`~reconad.detector.Detector`, or the path of a saved one.
        settings: limits, preprocessing overrides, batching.
    """

    def __init__(self, detector: Detector | str | Path, settings: ServeSettings) -> None:
        if isinstance(detector, Detector):
            self.detector, self.name = detector, "detector"
        else:
            self.detector = Detector.load(detector, device=settings.device)
            self.name = detector_name(detector)
        self.settings = settings
        det = self.detector
        stored = det.preprocessing_ or {}
        resize = settings.resize or (tuple(stored["resize"]) if stored.get("resize") else None)
        self.prep = Preparation(tuple(det.image_shape_), resize,
                                settings.grayscale or bool(stored.get("grayscale")),
                                settings.max_pixels)
        self.max_batch = settings.max_batch or images_per_pass(det.image_shape_)
        self.batcher = MicroBatcher(self._run_pass, self.max_batch,
                                    settings.batch_wait_ms / 1000, settings.batching)
        self._decoders = ThreadPoolExecutor(max_workers=settings.decode_threads,
                                            thread_name_prefix="reconad-decode")

    def _run_pass(self, images: np.ndarray, maps: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """One model pass (in the batcher's thread): scores, and maps when asked for."""
        if maps:
            found, scores = self.detector.anomaly_maps_and_scores(images)
            return np.asarray(scores, np.float64), found
        return np.asarray(self.detector.anomaly_score(images), np.float64), None

    async def score(self, uploads: list[Upload], maps: bool = False) -> list[dict[str, Any]]:
        """One result per upload, in order: ``{"id", "score", "flag", "threshold"}`` and, with
        ``maps``, ``"heatmap_png"`` (base64 PNG of :meth:`Detector.anomaly_maps`) and
        ``"map_scale"`` ([low, high]: the request's maps share one colour scale, as one batch
        of ``reconad score --maps`` does).

        Raises:
            ServeError: an upload that is not an image the detector can take (the first).
        """
        loop = asyncio.get_running_loop()
        images = await loop.run_in_executor(self._decoders, self._decode_all, uploads)
        scores, found = await self.batcher.score(images, maps)
        threshold = float(self.detector.threshold_)
        results = []
        for upload, score in zip(uploads, scores.tolist(), strict=True):
            finite = math.isfinite(score)
            results.append({"id": upload.name, "score": score if finite else None,
                             "flag": int(finite and score > threshold), "threshold": threshold})
        if found is not None:
            pngs, scale = await loop.run_in_executor(self._decoders, _heatmaps, found)
            for result, png in zip(results, pngs, strict=True):
                result["heatmap_png"] = base64.b64encode(png).decode("ascii")
                result["map_scale"] = list(scale)
        return results

    def _decode_all(self, uploads: list[Upload]) -> np.ndarray:
        """(n, C, H, W) float32: every upload decoded and fitted, in order."""
        return np.stack([decode_upload(u.read(), u.name, self.prep) for u in uploads])

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` reports: the detector, how uploads are prepared, the limits, and
        how many images and model passes this process has scored (their ratio: the mean
        batch)."""
        det, score = self.detector, self.detector.scorer_.config
        channels, height, width = det.image_shape_
        return {
            "name": self.name, "reconad_version": __version__,
            "input_shape": [channels, height, width],
            "threshold": float(det.threshold_), "threshold_method": det.threshold_method_,
            "model": det.config_["model"]["kind"], "score": score.kind,
            "score_parts": list(score.parts), "maps": True,
            "map": score.map if score.map != "none" else f"per-pixel {score.kind} error",
            "resize": None if self.prep.resize is None else list(self.prep.resize),
            "grayscale": self.prep.grayscale,
            "batching": self.settings.batching, "batch_wait_ms": self.settings.batch_wait_ms,
            "max_batch": self.max_batch, "limits": self.settings.limits(),
            # this process's counts so far (one worker's, with --workers N)
            "scored": {"images": self.batcher.images, "model_passes": self.batcher.passes},
        }

    def close(self) -> None:
        """Stop the decoding and model threads."""
        self._decoders.shutdown(wait=True)
        self.batcher.close()


def _heatmaps(maps: np.ndarray) -> tuple[list[bytes], tuple[float, float]]:
    """One PNG per map (N, H, W), all on one colour scale (:func:`reconad.report.heatmap_scale`
    of them)."""
    scale = heatmap_scale(maps)
    return heatmap_pngs(maps, *scale), scale

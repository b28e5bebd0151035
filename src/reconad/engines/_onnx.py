"""``reconad score --engine onnx``: score through onnxruntime with an exported graph
(:func:`reconad.detector.detector_to_onnx`), in place of torch.

:class:`OnnxDetector` reads an exported file and answers what the in-process engine asks of a
detector (``anomaly_score``, ``anomaly_maps_and_scores``, the threshold, the stored
preprocessing), so :func:`reconad.engines.score_collection` writes the same rows from it.
:func:`prepare_images` makes image files into the graph's input the way ``reconad score``
does, from the file's metadata alone.

>>> onnx_det = OnnxDetector("detector.onnx")               # doctest: +SKIP
>>> x = prepare_images("photos/", "detector.onnx")          # doctest: +SKIP
>>> onnx_det.anomaly_score(x)                               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reconad.data import float_batch, open_collection
from reconad.detector import onnx_session, read_metadata
from reconad.errors import ReconadError

ONNX_BATCH = 256  # images per session.run: the kNN part holds a (batch, bank) matrix


def score_onnx(session: Any, images: np.ndarray, batch_size: int = ONNX_BATCH,
               maps: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Scores (N,) float32 (and maps (N, H, W) with ``maps``) of prepared images
    (:func:`prepare_images`) from an onnxruntime ``session`` (or an exported file's path),
    ``batch_size`` at a time."""
    if isinstance(session, (str, Path)):
        session = onnx_session(session)
    names = [o.name for o in session.get_outputs()]
    if maps and "map" not in names:
        raise ReconadError("this ONNX file has no map output; export it with --maps")
    wanted = ["score", "map"] if maps else ["score"]
    scores, found = [], []
    for start in range(0, len(images), batch_size):
        x = np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)
        out = session.run(wanted, {"images": x})
        scores.append(out[0])
        if maps:
            found.append(out[1])
    score = np.concatenate(scores) if scores else np.empty(0, np.float32)
    if not maps:
        return score
    return score, (np.concatenate(found) if found else np.empty((0, 0, 0), np.float32))


class OnnxDetector:
    """An exported detector scored by onnxruntime, with the detector's interface for the
    in-process engine (scores come back float64, as the torch detector's do).

    Args:
        path: a ``.onnx`` file written by :func:`reconad.detector.detector_to_onnx`.
        threads: onnxruntime intra-op threads (None: its default, all cores).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        meta = read_metadata(path)
        self.path = Path(path)
        self.image_shape_ = tuple(int(s) for s in meta["image_shape"])
        self.preprocessing_ = meta["preprocessing"]
        self.threshold_ = float(meta["threshold"])
        self.threshold_method_ = meta["threshold_method"]
        self.session = onnx_session(path, threads)
        self.has_maps = "map" in [o.name for o in self.session.get_outputs()]

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = float_batch(np.asarray(x))
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape_:
            raise ReconadError(f"images of shape {tuple(x.shape[1:])} given to an ONNX graph "
                               f"of {self.image_shape_} (CxHxW); prepare them with its "
                               "resize/grayscale")
        return x

    def anomaly_score(self, x: np.ndarray) -> np.ndarray:
        """(N,) float64, higher = more anomalous (flag: score > ``threshold_``)."""
        return score_onnx(self.session, self._check(x)).astype(np.float64)

    def anomaly_maps_and_scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(maps (N, H, W) float32, scores (N,) float64) from one run of the graph."""
        if not self.has_maps:
            raise ReconadError(f"{self.path} has no map output; export it with --maps")
        score, maps = score_onnx(self.session, self._check(x), maps=True)
        return maps, score.astype(np.float64)


def prepare_images(source: Any, target: Any, resize: tuple[int, int] | None = None,
                   grayscale: bool = False, batch_size: int = ONNX_BATCH) -> np.ndarray:
    """Raw images made into an exported graph's input, float32 (N, C, H, W) in [0, 1], the
    way ``reconad score`` prepares them: the stored resize and grey conversion (``resize`` /
    ``grayscale`` as the CLI's options override them).

    Args:
        source: what ``reconad score`` reads: a folder, an image file, ``.npy``/``.npz``,
            ``.parquet``, CSV, IDX, or a named dataset (``mnist``, ...).
        target: an exported ``.onnx`` file (its metadata), an :class:`OnnxDetector` or a
            fitted Detector.
        resize / grayscale: override the stored preprocessing, as ``--resize`` /
            ``--grayscale`` do.

    Raises:
        ReconadError: an unreadable file or one the detector's shape cannot take.
    """
    if isinstance(target, (str, Path)):
        target = OnnxDetector(target)
    shape, stored = tuple(target.image_shape_), target.preprocessing_
    resize = resize or (tuple(stored["resize"]) if stored.get("resize") else None)
    collection = open_collection(source, shape, resize=resize,
                                 grayscale=grayscale or bool(stored.get("grayscale")))
    parts = []
    for start in range(0, len(collection), batch_size):
        batch = collection.batch(np.arange(start, min(start + batch_size, len(collection))))
        if batch.bad:
            raise ReconadError(batch.bad[0][1])
        parts.append(float_batch(batch.x))
    if not parts:
        return np.empty((0, *shape), np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

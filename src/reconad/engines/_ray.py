"""``reconad score --engine ray``: score a collection on a Ray cluster with Ray Data.

The collection's positions ``0..N-1`` form a Ray dataset; ``map_batches`` runs
:class:`_Scorer` on a fixed pool of actors, each loading the detector once and decoding its
batches through the same :class:`reconad.data.Collection` as the single-process engine
(so both give the same ids and scores). Folders are decoded this way rather than with
``ray.data.read_images`` so that ids are paths relative to the input folder and resizing is
exactly the training one; a ``.parquet`` is read row group by row group by the actors in the
same way rather than with ``ray.data.read_parquet``, for the same ids. The detector and the
collection travel through the object store: a folder, ``.npy`` or ``.parquet`` must sit on a
filesystem every node sees (the file list or path travels, not the files); ``.npz``, CSV and
named datasets travel whole.

Output: with ``--out DIR``, Parquet shards written by the workers in ``DIR/parquet/`` and
``DIR/scores.csv``; with ``--out FILE.csv`` or no ``--out``, the CSV alone. Columns as in
:data:`reconad.engines.COLUMNS`.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from reconad.data import Collection
from reconad.detector import Detector
from reconad.engines._local import (
    COLUMNS,
    Extremes,
    ScoreSummary,
    csv_rows,
    csv_target,
    score_columns,
)
from reconad.errors import ReconadError
from reconad.files import atomic_directory

INSTALL_HINT = 'pip install "reconad[ray]"'


def actor_resources(device: str, workers: int, num_gpus: float | None,
                    cluster_gpus: float) -> dict[str, Any]:
    """The actor pool's ``compute`` and ``num_gpus`` for ``map_batches``.

    ``num_gpus`` given: that many per actor. Otherwise one GPU per actor for ``cuda``, and for
    ``auto`` where the cluster has GPUs (the pool then has at most one actor per GPU, so that no
    actor waits for one); none for ``cpu``/``mps`` or a cluster without GPUs (a GPU reserved
    for a CPU scorer would sit idle and cap the pool at the number of GPUs).
    """
    import ray

    if num_gpus is None:
        wants = device.startswith("cuda") or (device == "auto" and cluster_gpus >= 1)
        num_gpus = 1 if wants else 0
    if num_gpus and device == "auto" and cluster_gpus >= 1:
        workers = max(1, min(workers, int(cluster_gpus // num_gpus)))
    return {"compute": ray.data.ActorPoolStrategy(size=workers), "num_gpus": num_gpus}


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks it)
    except ImportError as exc:
        raise ReconadError(
            f"--engine ray needs Ray Data, which is not installed ({exc.name}); run "
            f"{INSTALL_HINT}"
        ) from None
    return ray


def score_on_ray(
    detector_path: str | Path,
    collection: Collection,
    out: Path | None = None,
    batch_size: int = 256,
    workers: int = 2,
    address: str | None = None,
    skip_bad: bool = False,
    gallery: Path | None = None,
    gallery_k: int = 16,
    title: str = "highest and lowest scores",
    num_gpus: float | None = None,
    device: str = "cpu",
) -> ScoreSummary:
    """Score ``collection`` with ``workers`` Ray actors; write Parquet shards and/or a CSV.

    Args:
        detector_path: the ``detector.safetensors`` file (read here, shipped as bytes).
        collection: the images (:func:`reconad.data.open_collection`).
        out: a folder (Parquet shards in ``out/parquet/`` plus ``out/scores.csv``), a ``.csv``
            file, or None (CSV on stdout).
        batch_size: images per actor call.
        workers: actors in the pool; a local Ray is started with this many CPUs.
        address: a running cluster to join (``ray.init(address=...)``); None starts a local
            Ray, shut down again at the end.
        skip_bad: record unreadable image files instead of stopping at the first.
        gallery: PNG of the ``gallery_k`` highest and lowest scored images, or None.
        gallery_k: images per block of the gallery.
        title: the gallery's title.
        num_gpus: GPUs reserved per actor; None: see :func:`actor_resources`.
        device: where each actor scores (``cpu``, ``cuda``, ``mps``, ``auto``), resolved by
            the actor on its own node (with ``auto``: a GPU where the cluster has one), not
            on this driver, which may have none.

    Returns:
        The counts and the skipped files, as :func:`reconad.engines.score_collection`.

    Raises:
        ReconadError: Ray not installed, an unreadable image (unless ``skip_bad``), etc.
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR",
                     log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows in collection order
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        # Positions as in-memory blocks (not ray.data.range): a read stage would need a CPU
        # of its own, and with every CPU held by a scoring actor it would never run.
        n_blocks = max(1, min(-(-len(collection) // batch_size), 4096))
        positions = np.array_split(np.arange(len(collection), dtype=np.int64), n_blocks)
        scored = ray.data.from_numpy(positions).map_batches(
            _Scorer,
            # Inside a list, so that the references reach the actor unresolved (ray.get there).
            fn_constructor_args=([ray.put(Path(detector_path).read_bytes()),
                                  ray.put(collection), device],),
            batch_size=batch_size,
            batch_format="numpy",
            **actor_resources(device, workers, num_gpus,
                              float(ray.cluster_resources().get("GPU", 0))),
        ).materialize()
        to_folder = out is not None and out.suffix.lower() != ".csv"
        if to_folder:
            with atomic_directory(out) as tmp:
                summary = _write_csv(scored, collection, tmp / "scores.csv", skip_bad,
                                     gallery, gallery_k, title)
                scored.map_batches(_without_extras, batch_format="pyarrow").write_parquet(
                    str(tmp / "parquet"))
        else:
            summary = _write_csv(scored, collection, out, skip_bad, gallery, gallery_k, title)
    finally:
        if started:
            ray.shutdown()
    return summary


def _write_csv(scored: Any, collection: Collection, out: Path | None, skip_bad: bool,
               gallery: Path | None, gallery_k: int, title: str) -> ScoreSummary:
    """Stream the scored rows to the CSV in order, checking for unreadable files."""
    summary = ScoreSummary()
    extremes = Extremes(gallery_k) if gallery is not None else None
    with csv_target(out) as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for table in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            columns = table.to_pydict()
            for image_id, error in zip(columns["id"], columns["error"], strict=True):
                if error is not None:
                    if not skip_bad:
                        raise ReconadError(error)
                    summary.skipped.append((image_id, error))
            good = [i for i, e in enumerate(columns["error"]) if e is None]
            kept = {k: [columns[k][i] for i in good] for k in (*COLUMNS, "position")}
            kept["score"] = np.asarray(kept["score"], dtype=np.float64)
            kept["flag"] = np.asarray(kept["flag"], dtype=np.int64)
            writer.writerows(csv_rows(kept))
            summary.n_scored += len(good)
            summary.n_flagged += int(kept["flag"].sum())
            if extremes is not None:
                extremes.add(kept, np.asarray(kept["position"], dtype=np.int64))
    if extremes is not None:
        extremes.draw(gallery, title, decode=lambda positions: _decode(collection, positions))
    return summary


def _decode(collection: Collection, positions: list[int]) -> np.ndarray:
    """Images at ``positions`` (any order), decoded on the driver for the gallery."""
    positions = np.asarray(positions, dtype=np.int64)
    order = np.argsort(positions)
    images = collection.batch(positions[order]).x
    out = np.empty_like(images)
    out[order] = images
    return out


def _without_extras(table: Any) -> Any:
    """Rows of readable images, in the output columns only (for the Parquet shards)."""
    import pyarrow.compute as pc

    return table.filter(pc.is_null(table["error"])).select(list(COLUMNS))


class _Scorer:
    """A Ray Data actor: loads the detector once, then scores batches of positions."""

    def __init__(self, refs: list) -> None:
        import ray

        detector_bytes, self.collection = ray.get(refs[:2])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "detector.safetensors"
            path.write_bytes(detector_bytes)
            self.detector = Detector.load(path, device=refs[2])

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        batch_of = self.collection.batch(np.sort(batch["data"]).astype(np.int64))
        columns = score_columns(self.detector, self.collection, batch_of)
        bad_positions = [p for p, _ in batch_of.bad]
        bad_ids = self.collection.ids(np.asarray(bad_positions, dtype=np.int64))
        # Good and bad rows back in position order.
        rows = sorted(
            [(p, i, lab, c, s, f, None) for p, i, lab, c, s, f in zip(
                batch_of.index.tolist(), columns["id"], columns["label"], columns["class"],
                columns["score"].tolist(), columns["flag"].tolist(), strict=True)]
            + [(p, i, None, None, float("nan"), 0, reason)
               for p, i, (_, reason) in zip(bad_positions, bad_ids, batch_of.bad, strict=True)]
        )
        position, ids, labels, classes, scores, flags, errors = (
            list(col) for col in zip(*rows, strict=True)) if rows else ([],) * 7
        return pa.table({
            "id": pa.array(ids, pa.string()),
            "label": pa.array(labels, pa.int64()),
            "class": pa.array(classes, pa.string()),
            "score": pa.array(scores, pa.float64()),
            "flag": pa.array(flags, pa.int64()),
            "position": pa.array(position, pa.int64()),
            "error": pa.array(errors, pa.string()),
        })

"""ONNX export: a fitted detector's whole score as one ONNX graph, for a line computer or a
service with an ONNX runtime and nothing of reconad or torch.

Graph contract::

    input   images  float32 (N, C, H, W) in [0, 1], after the detector's own preprocessing
                    (resize / grey conversion: :func:`reconad.engines.prepare_images`);
                    N is dynamic
    output  score   float32 (N,)   higher = more anomalous (flag: score > threshold)
    output  map     float32 (N, H, W), for map detectors (score.map set) or maps=True

The graph is traced from :class:`reconad.score.ScoreGraph` with torch's default exporter
(``torch.onnx.export(dynamo=True)``: ``torch.export`` and onnxscript; the TorchScript exporter
gives the same graph). The detector's preprocessing, image shape, threshold and score settings
travel in the file's metadata (``reconad.*`` keys, :func:`read_metadata`). Needs the ``onnx``
extra (``pip install "reconad[onnx]"``).

>>> path = detector_to_onnx(det, "detector.onnx")            # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconad.errors import ReconadError
from reconad.files import atomic_file
from reconad.score import ScoreGraph

DEFAULT_OPSET = 18  # GridSample needs 16; 18 is what onnxruntime >= 1.14 runs everywhere
MIN_OPSET = 16
METADATA_PREFIX = "reconad."
INSTALL_HINT = 'pip install "reconad[onnx]"'
METADATA_KEYS = ("image_shape", "preprocessing", "threshold", "threshold_method", "score")


def import_onnx():
    """The ``onnx`` module, or a one-line error naming the extra to install."""
    try:
        import onnx
    except ImportError:
        raise ReconadError(f"ONNX export needs the onnx package; run {INSTALL_HINT}") from None
    return onnx


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for an exported file (``threads``: intra-op threads)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ReconadError(f"scoring an ONNX file needs onnxruntime; run {INSTALL_HINT}"
                           ) from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad file
        raise ReconadError(f"{path} is not an ONNX graph onnxruntime can run "
                           f"({type(exc).__name__}); export it again with reconad export"
                           ) from None


def onnx_metadata(detector: Any) -> dict[str, str]:
    """What a consumer of the ONNX file needs besides the graph: the image shape, the
    preprocessing that makes raw images into the input, the threshold (flag = score >
    threshold) and the score settings, as ``reconad.*`` string entries."""
    return {
        f"{METADATA_PREFIX}image_shape": json.dumps(list(detector.image_shape_)),
        f"{METADATA_PREFIX}preprocessing": json.dumps(detector.preprocessing_),
        f"{METADATA_PREFIX}threshold": repr(float(detector.threshold_)),
        f"{METADATA_PREFIX}threshold_method": str(detector.threshold_method_),
        f"{METADATA_PREFIX}score": json.dumps(detector.scorer_.config.model_dump(mode="json")),
    }


def detector_to_onnx(detector: Any, path: str | Path, opset: int = DEFAULT_OPSET,
                     maps: bool | None = None, dynamo: bool = True, check: bool = True) -> Path:
    """Write ``detector``'s scoring as one ONNX graph to ``path`` (atomically); returns it.

    Args:
        detector: a fitted :class:`reconad.detector.Detector`.
        path: the ``.onnx`` file to write (one file: weights and kNN bank inside).
        opset: ONNX opset (>= 16, for GridSample).
        maps: also output ``map`` (N, H, W); None = for map detectors only.
        dynamo: True: torch's default exporter (``torch.export`` + onnxscript); False: the
            TorchScript exporter (torch deprecates it; faster to export, the same numbers).
        check: run the written file with onnxruntime on batches of 1 and 3 random images
            and compare with :class:`~reconad.score.ScoreGraph` (:func:`check_onnx`): an
            exporter can fix the batch size silently (a Python ``len(x)`` in a model), which
            only shows when another batch size runs.

    Raises:
        ReconadError: an unfitted detector, an opset below 16, an export that fails or a
            written graph that fails its check (nothing is left at ``path`` then).
    """
    onnx = import_onnx()
    if opset < MIN_OPSET:
        raise ReconadError(f"opset {opset} is too old; GridSample needs opset >= {MIN_OPSET}")
    graph = ScoreGraph(detector, maps).eval()
    with atomic_file(path) as tmp:
        model = _export(graph, tmp, opset, dynamo)
        for key, value in onnx_metadata(detector).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))  # one file (a model over 2 GB would need external data)
        if check:
            check_onnx(graph, tmp)
    return Path(path)


def _export(graph: ScoreGraph, tmp: Path, opset: int, dynamo: bool):
    """The ONNX model proto of ``graph`` (the TorchScript exporter writes ``tmp`` on its way)."""
    import logging
    import warnings

    onnx = import_onnx()
    example = torch.rand(2, *graph.image_shape)
    outputs = ["score", "map"] if graph.with_map else ["score"]
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    try:
        quiet.setLevel(logging.ERROR)  # "torchvision is not installed" and the like
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer, deprecation and pytree warnings
            if dynamo:
                batch = torch.export.Dim("batch", min=1)
                program = torch.onnx.export(
                    graph, (example,), input_names=["images"], output_names=outputs,
                    opset_version=opset, dynamo=True, verbose=False,
                    dynamic_shapes={"images": {0: batch}})
                return program.model_proto
            axes = {name: {0: "batch"} for name in ["images", *outputs]}
            torch.onnx.export(graph, (example,), str(tmp), input_names=["images"],
                              output_names=outputs, opset_version=opset, dynamo=False,
                              dynamic_axes=axes, do_constant_folding=True)
            return onnx.load(str(tmp))
    except ImportError as exc:  # onnxscript, for the default exporter
        raise ReconadError(f"ONNX export needs {exc.name or 'onnxscript'}; run "
                           f"{INSTALL_HINT}") from None
    except Exception as exc:  # the exporters raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ReconadError(f"ONNX export failed ({type(exc).__name__}: {first[:300]})"
                           ) from exc
    finally:
        quiet.setLevel(level)


def check_onnx(graph: ScoreGraph, path: str | Path, seed: int = 0) -> None:
    """Run the exported ``path`` on 1 and 3 random images and compare with ``graph`` (the
    torch module it came from): a symbolic batch axis, the same outputs (1e-3 relative; a
    sanity check against a graph that fixed its batch size or lost an op, not the accuracy
    test), the same score for an image alone and in a batch.

    Raises:
        ReconadError: naming what differs.
    """
    onnx = import_onnx()
    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type
    if not dim.shape.dim[0].dim_param:
        raise ReconadError(f"the exported graph has a fixed batch size "
                           f"{dim.shape.dim[0].dim_value}; a model used len(x) or x.shape[0] "
                           "as a Python number")
    x = torch.rand(3, *graph.image_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = graph(x)
    want = want[0] if isinstance(want, tuple) else want
    session = onnx_session(path, threads=1)
    try:
        alone = session.run(["score"], {"images": x[:1].numpy()})[0]
        together = session.run(["score"], {"images": x.numpy()})[0]
    except Exception as exc:  # onnxruntime's errors: a shape baked into a Reshape, ...
        raise ReconadError(f"the exported graph does not run on batches of 1 and 3 "
                           f"({str(exc).splitlines()[0][:300]})") from None
    scale = np.maximum(np.abs(want.double().numpy()), 1.0)
    if together.shape != (3,) or not np.isfinite(together).all():
        raise ReconadError(f"the exported graph gives scores of shape {together.shape}")
    if (np.abs(together - want.numpy()) / scale).max() > 1e-3 or \
            abs(alone[0] - together[0]) / scale[0] > 1e-3:
        raise ReconadError(f"the exported graph scores {together.tolist()} where the torch "
                           f"graph scores {want.tolist()}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``reconad.*`` metadata of an exported file, decoded: ``image_shape``,
    ``preprocessing``, ``threshold``, ``threshold_method``, ``score``.

    Raises:
        ReconadError: a missing file, a file that is not ONNX, or ONNX without reconad's
            metadata (not written by :func:`detector_to_onnx`).
    """
    onnx = import_onnx()
    path = Path(path)
    if not path.is_file():
        raise ReconadError(f"{path} does not exist; export a detector with reconad export")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others
        raise ReconadError(f"{path} is not an ONNX file ({type(exc).__name__}); export it "
                           "again with reconad export") from None
    raw = {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
           if p.key.startswith(METADATA_PREFIX)}
    if set(raw) != set(METADATA_KEYS):
        raise ReconadError(f"{path} is an ONNX graph without reconad's metadata (image shape, "
                           "preprocessing, threshold); export it with reconad export")
    try:
        return {key: value if key == "threshold_method" else json.loads(value)
                for key, value in raw.items()}
    except ValueError:
        raise ReconadError(f"{path} has damaged reconad metadata; export it again") from None

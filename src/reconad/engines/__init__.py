"""The engines of ``reconad score``: a saved detector over a collection of images, rows
``id,label,class,score,flag`` written as they are scored.

Modules: ``_local`` (in one process, files decoded by worker processes, the gallery kept in
two heaps), ``_ray`` (a Ray Data actor pool over the same collections; Parquet shards plus
the CSV), ``_onnx`` (an exported graph scored by onnxruntime, through the in-process engine).
"""

from reconad.engines._local import (
    COLUMNS,
    Extremes,
    ScoreSummary,
    csv_rows,
    csv_target,
    score_collection,
    score_columns,
)
from reconad.engines._onnx import ONNX_BATCH, OnnxDetector, prepare_images, score_onnx
from reconad.engines._ray import actor_resources, score_on_ray

__all__ = ["COLUMNS", "ONNX_BATCH", "Extremes", "OnnxDetector", "ScoreSummary", "actor_resources",
           "csv_rows", "csv_target", "prepare_images", "score_collection", "score_columns",
           "score_on_ray", "score_onnx"]

"""The detector users fit, score with, save and load, and its file format.

Modules: ``_file`` (one safetensors file: weights plus a checked JSON header, read as
untrusted input), ``_onnx`` (the whole score exported as one ONNX graph), ``_estimator``
(:class:`Detector`, the scikit-learn-style estimator).

>>> from reconad.detector import Detector
>>> Detector().get_params()["model"] is None
True
"""

from reconad.detector._estimator import Detector
from reconad.detector._file import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    VAL_SCORES_KEY,
    Header,
    check_header,
    check_preprocessing,
    declared_model,
    digest,
    read_detector_file,
    take_val_scores,
    take_weights,
    write_detector_file,
)
from reconad.detector._onnx import (
    DEFAULT_OPSET,
    check_onnx,
    detector_to_onnx,
    onnx_metadata,
    onnx_session,
    read_metadata,
)

__all__ = ["DEFAULT_OPSET", "FORMAT_VERSION", "MAX_HEADER_BYTES", "VAL_SCORES_KEY", "Detector",
           "Header", "check_header", "check_onnx", "check_preprocessing", "declared_model",
           "detector_to_onnx", "digest", "onnx_metadata", "onnx_session", "read_detector_file",
           "read_metadata", "take_val_scores", "take_weights", "write_detector_file"]

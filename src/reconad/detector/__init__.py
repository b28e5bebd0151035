"""The detector users fit, score with, save and load, and its file format.

Modules: ``_file`` (one safetensors file: weights plus a checked JSON header, read as
untrusted input), ``_estimator`` (:class:`Detector`, the scikit-learn-style estimator).

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

__all__ = ["FORMAT_VERSION", "MAX_HEADER_BYTES", "VAL_SCORES_KEY", "Detector", "Header",
           "check_header", "check_preprocessing", "declared_model", "digest",
           "read_detector_file", "take_val_scores", "take_weights", "write_detector_file"]

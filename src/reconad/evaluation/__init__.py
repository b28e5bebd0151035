"""How good the scores are: AUROC/AP, group statistics and confusion at every threshold
(thresholds picked on dev, every set evaluated at them), and pixel-level localisation.

Modules: ``_metrics`` (one set's image-level metrics), ``_thresholds`` (every threshold
method, :func:`evaluate_sets`), ``_localization`` (pixel AUROC and AU-PRO, exact, on a stack
of maps), ``_localization_batches`` (the same fed batch by batch in bounded memory: what runs
use).
"""

from reconad.evaluation._localization import area_under, pixel_auroc, pro_curve, pro_score
from reconad.evaluation._localization_batches import (
    LocalizationAccumulator,
    localization_metrics,
    localization_thresholds,
)
from reconad.evaluation._metrics import check_scores, evaluate_set, group_stats
from reconad.evaluation._thresholds import METHODS, compute_thresholds, evaluate_sets

__all__ = ["METHODS", "LocalizationAccumulator", "area_under", "check_scores",
           "compute_thresholds", "evaluate_set", "evaluate_sets", "group_stats",
           "localization_metrics", "localization_thresholds", "pixel_auroc", "pro_curve",
           "pro_score"]

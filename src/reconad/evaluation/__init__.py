"""How good the scores are: AUROC/AP, group statistics and confusion at every threshold
(thresholds picked on dev, every set evaluated at them), and pixel-level localisation.

Modules: ``_metrics`` (one set's image-level metrics), ``_thresholds`` (every threshold
method, :func:`evaluate_sets`), ``_localization`` (pixel AUROC and AU-PRO).
"""

from reconad.evaluation._localization import (
    area_under,
    localization_metrics,
    pixel_auroc,
    pro_curve,
    pro_score,
)
from reconad.evaluation._metrics import check_scores, evaluate_set, group_stats
from reconad.evaluation._thresholds import METHODS, compute_thresholds, evaluate_sets

__all__ = ["METHODS", "area_under", "check_scores", "compute_thresholds", "evaluate_set",
           "evaluate_sets", "group_stats", "localization_metrics", "pixel_auroc", "pro_curve",
           "pro_score"]

"""What is done to images as tensors before a model sees them: training-time rotation, zoom,
shift, flips and crops, the fixed copies of test-time augmentation, and the corruptions that
make anomalies (the corruption scenario) and denoising inputs (training).

Modules: ``_augment`` (affine warps, flips, crops, test-time views), ``_corruptions`` (noise),
``_anomalies`` (simulated anomalies with exact masks, for ``model.kind=draem``).
"""

from reconad.transforms._anomalies import FILLS, paste_anomaly, simulate_anomalies
from reconad.transforms._augment import (
    affine_matrices,
    augment_batch,
    check_patch,
    random_crops,
    random_flips,
    tta_moves,
    tta_pixels,
    tta_views,
    warp,
)
from reconad.transforms._corruptions import KINDS, corrupt

__all__ = ["FILLS", "KINDS", "affine_matrices", "augment_batch", "check_patch", "corrupt",
           "paste_anomaly", "random_crops", "random_flips", "simulate_anomalies", "tta_moves",
           "tta_pixels", "tta_views", "warp"]

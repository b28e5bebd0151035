"""The score rule: from a trained autoencoder's view of images to one anomaly score per image
(higher = more anomalous) and, for defects, a per-pixel anomaly map.

Modules, from the floor up: ``_knn`` (exact nearest training codes), ``_maps`` (anomaly
maps, smoothing, per-position standardisation, reduction), ``_color`` (local colour
statistics map), ``_passes`` (the model run over images in fixed-size passes:
reconstructions, codes, error and anomaly maps), ``_parts`` (reconstruction error, latent kNN,
class energy, test-time copies, their :class:`Calibration`), ``_scorer`` (:class:`Scorer`:
settings and fitted state, saved in and restored from a detector file).
"""

from reconad.score._color import ColorStats, local_stats
from reconad.score._graph import ScoreGraph
from reconad.score._knn import (
    KNN_SHORTLIST,
    knn_distance,
    knn_distance_among,
    knn_search,
    smallest,
)
from reconad.score._maps import (
    MAP_KINDS,
    REDUCTIONS,
    MapNormalizer,
    anomaly_map,
    gaussian_smooth,
    reduce_map,
)
from reconad.score._parts import (
    LOG_PARTS,
    TV_FLOOR,
    Calibration,
    recon_error,
    score_images,
    score_parts,
    total_variation,
)
from reconad.score._passes import (
    error_maps,
    images_per_pass,
    latent_codes,
    map_images,
    passes,
    reconstruct,
)
from reconad.score._scorer import (
    BANK_KEY,
    MAP_PREFIX,
    Scorer,
    map_components,
    map_tensor_keys,
)

__all__ = [
    "BANK_KEY", "KNN_SHORTLIST", "LOG_PARTS", "MAP_KINDS", "MAP_PREFIX", "REDUCTIONS",
    "TV_FLOOR", "Calibration", "ColorStats", "MapNormalizer", "ScoreGraph", "Scorer",
    "anomaly_map",
    "error_maps", "gaussian_smooth", "images_per_pass", "knn_distance", "knn_distance_among",
    "knn_search", "latent_codes", "local_stats", "map_components", "map_images",
    "map_tensor_keys", "passes", "recon_error", "reconstruct", "reduce_map", "score_images",
    "score_parts", "smallest", "total_variation",
]

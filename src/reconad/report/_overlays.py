"""Anomaly maps for people: heat-map PNGs of single maps, and overlays of the top images.

:func:`heatmap_rgb` colours maps on one fixed scale (so images can be compared), which
:func:`heatmap_scale` picks; :func:`heatmap_pngs` encodes one PNG per map and
:func:`write_heatmaps` writes them (``reconad score --maps``; ``reconad serve`` sends them);
:func:`defect_overlays` draws, for the highest-scored images of a run, the image, the image
with its heat-map laid over it and the outline of the region above the map threshold, and the
ground-truth defect outline. Plain NumPy in, PNG out; matplotlib is imported inside.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reconad.files import atomic_file
from reconad.report._pictures import short_id
from reconad.report._style import ANOMALY_COLOR, NORMAL_COLOR, figure, fmt, note

COLORMAP = "inferno"
OVERLAY_CAPTION_CHARS = 28  # what an overlay's title shows of an id


def heatmap_rgb(maps: np.ndarray, low: float, high: float) -> np.ndarray:
    """Maps (N, H, W) coloured on the scale [low, high]: (N, H, W, 3) float in [0, 1]."""
    from matplotlib import colormaps

    span = max(float(high) - float(low), 1e-12)
    scaled = np.clip((np.nan_to_num(np.asarray(maps, float)) - low) / span, 0, 1)
    return colormaps[COLORMAP](scaled)[..., :3]


def map_file_name(image_id: str) -> str:
    """The PNG name of an image's map: its id with the image suffix dropped and every
    character but letters, digits, ``-`` and ``.`` replaced by ``_``
    (``test/scratch/000.png`` -> ``test_scratch_000.png``)."""
    stem = re.sub(r"\.(png|jpe?g|bmp|tiff?|gif|webp)$", "", image_id, flags=re.I)
    return re.sub(r"[^A-Za-z0-9.-]", "_", stem).strip(".") + ".png"


def heatmap_scale(maps: np.ndarray) -> tuple[float, float]:
    """The colour scale (low, high) of a set of maps (N, H, W): their 0.1 and 99.9
    percentiles (``reconad score --maps`` sets it from its first batch, ``reconad serve`` from
    each request's images), so one stray pixel does not wash the others out."""
    low, high = np.percentile(maps, [0.1, 99.9])
    return float(low), float(max(high, low + 1e-12))


def heatmap_pngs(maps: np.ndarray, low: float, high: float) -> list[bytes]:
    """One heat-map PNG (bytes) per map (N, H, W), coloured on the scale [low, high]."""
    import io

    from PIL import Image

    rgb = (heatmap_rgb(maps, low, high) * 255 + 0.5).astype(np.uint8)
    pngs = []
    for tile in rgb:
        buffer = io.BytesIO()
        Image.fromarray(tile).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def write_heatmaps(maps: np.ndarray, ids: Sequence[str], folder: Path, low: float,
                   high: float) -> list[Path]:
    """One heat-map PNG per map (N, H, W), named :func:`map_file_name` of its id, written
    atomically into ``folder`` (created); the colours span [low, high] for every map."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for png, image_id in zip(heatmap_pngs(maps, low, high), ids, strict=True):
        path = folder / map_file_name(str(image_id))
        with atomic_file(path) as tmp:
            tmp.write_bytes(png)
        paths.append(path)
    return paths


def defect_overlays(images: np.ndarray, maps: np.ndarray, masks: np.ndarray,
                    scores: np.ndarray, threshold: float, out_path: str | Path,
                    ids: Sequence[str] | None = None,
                    title: str = "Highest-scored images: where the map points") -> Path:
    """Per image (rows): the image; the image under its heat-map with the outline of the map
    region above ``threshold`` (anomaly colour) and of the true defect (normal colour).

    Args:
        images: (K, C, H, W) in [0, 1].
        maps: (K, H, W) anomaly maps.
        masks: (K, H, W) bool ground-truth defects.
        scores: (K,) image scores (captions).
        threshold: map value whose outline is drawn.
        out_path: the PNG to write.
        ids: (K,) captions' image ids (their ends, :func:`overlay_caption`).
        title: figure title.
    """
    k = len(images)
    low, high = float(np.min(maps)) if k else 0.0, float(np.max(maps)) if k else 1.0
    heat = heatmap_rgb(maps, low, high) if k else np.zeros((0, 1, 1, 3))
    captions: list[str] = []
    with figure(out_path, figsize=(2 * 1.6, max(k, 1) * 1.7), nrows=max(k, 1), ncols=2,
                squeeze=False) as (fig, axes):
        for i in range(k):
            image = np.clip(images[i], 0, 1)
            rgb = np.repeat(image, 3, 0) if image.shape[0] == 1 else image[:3]
            rgb = np.transpose(rgb, (1, 2, 0))
            left, right = axes[i]
            left.imshow(rgb, interpolation="nearest")
            caption = overlay_caption(scores[i], None if ids is None else ids[i])
            left.set_title(caption, fontsize=7)
            captions.append(caption.replace("\n", ", "))
            right.imshow(0.5 * rgb + 0.5 * heat[i], interpolation="nearest")
            if (maps[i] > threshold).any():
                right.contour(maps[i] > threshold, levels=[0.5], colors=[ANOMALY_COLOR],
                              linewidths=0.8)
            if masks[i].any():
                right.contour(masks[i], levels=[0.5], colors=[NORMAL_COLOR], linewidths=0.8,
                              linestyles="dashed")
            right.set_title("map > threshold / defect", fontsize=7)
        for ax in axes.ravel():
            ax.set_axis_off()
        fig.suptitle(title, fontsize=9)
        note(fig, "Captions: " + "; ".join(captions))  # the PNG's text, for people and tests
    return Path(out_path)


def overlay_caption(score: float, image_id: str | None = None) -> str:
    """The title of an overlay: the image's id (its end, :func:`short_id`) and score.

    >>> overlay_caption(3.25, "test/contamination/really_long_name_017.png")
    '…/really_long_name_017.png\\nscore 3.25'
    """
    name = "" if image_id is None else short_id(str(image_id), OVERLAY_CAPTION_CHARS) + "\n"
    return f"{name}score {fmt(score)}"

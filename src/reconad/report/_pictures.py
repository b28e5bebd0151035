"""Image grids: reconstructions of a sample per group, and a gallery of the extreme scores.

Like every chart of the package (and in its style, :func:`reconad.report.figure`), each
function takes plain NumPy data, writes one PNG atomically and returns its path; matplotlib is
imported inside the functions, so ``import reconad`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reconad.errors import ReconadError
from reconad.report._style import ANOMALY_COLOR, NORMAL_COLOR, figure, fmt, message, note


def select_extremes(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k highest scores (NaN counts as highest) and the k lowest of the rest.

    Args:
        scores: (N,) anomaly scores.
        k: how many of each.

    Returns:
        ``(top, bottom)``: top in decreasing score order, bottom in increasing order, disjoint.
    """
    scores = np.asarray(scores, dtype=float)
    # NaN sorts as most anomalous: a broken score is exactly what a user should look at.
    order = np.argsort(np.where(np.isnan(scores), np.inf, scores), kind="stable")[::-1]
    top = order[:k]
    rest = order[k:][::-1]  # the most normal images not already shown as outliers
    return top, rest[:k]


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) RGB; grey images are repeated over the channels."""
    image = np.clip(np.nan_to_num(np.asarray(image, dtype=float)), 0, 1)
    if image.shape[0] == 1:
        return np.repeat(image[0][:, :, None], 3, axis=2)
    return np.transpose(image[:3], (1, 2, 0))


class _Mosaic:
    """Tiles laid out on one RGB canvas, drawn with a single imshow.

    Dozens of small Axes make matplotlib slow (seconds per figure); one image with text
    annotations draws in a fraction of that and looks the same.
    """

    def __init__(self, tile_hw: tuple[int, int], n_cols: int, row_gaps: Sequence[float]) -> None:
        # Small images are enlarged by whole pixels (no blur), so that padding and frames can
        # be thinner than one image pixel.
        self.zoom = max(1, -(-64 // max(tile_hw)))
        self.h, self.w = (d * self.zoom for d in tile_hw)
        self.pad = max(3, round(0.09 * self.w))
        self.n_cols = n_cols
        # Top edge of each row on the canvas; a gap above a row leaves room for captions.
        self.tops, y = [], 0.0
        for gap in row_gaps:
            y += self.pad + gap * self.h
            self.tops.append(round(y))
            y = round(y) + self.h
        self.canvas = np.ones((round(y) + self.pad, n_cols * (self.w + self.pad) + self.pad, 3))

    def left(self, col: int) -> int:
        return self.pad + col * (self.w + self.pad)

    def put(self, row: int, col: int, tile: np.ndarray, frame: str | None = None) -> None:
        """Place an (H, W, 3) tile, optionally framed in a colour (the padding around it)."""
        top, left = self.tops[row], self.left(col)
        if frame is not None:
            from matplotlib.colors import to_rgb

            p = max(1, self.pad // 3)
            self.canvas[top - p:top + self.h + p, left - p:left + self.w + p] = to_rgb(frame)
        tile = np.repeat(np.repeat(tile, self.zoom, axis=0), self.zoom, axis=1)
        self.canvas[top:top + self.h, left:left + self.w] = tile

    def figure(self, out_path: str | Path, inches_per_tile: float = 1.15):
        """The house-style figure context, sized so that each tile is ``inches_per_tile``."""
        scale = inches_per_tile / self.w
        height, width = self.canvas.shape[:2]
        return figure(out_path, figsize=(width * scale, height * scale))

    def draw(self, ax: Any) -> None:
        ax.imshow(self.canvas, interpolation="nearest")
        ax.set_axis_off()
        ax.set_position((0, 0, 1, 1))

    def caption(self, ax: Any, row: int, col: int, text: str, **kw: Any) -> None:
        ax.text(self.left(col) + self.w / 2, self.tops[row] - self.pad, text, ha="center",
                va="bottom", fontsize=7, linespacing=1.1, **kw)

    def row_label(self, ax: Any, row: int, text: str, **kw: Any) -> None:
        ax.text(-self.pad, self.tops[row] + self.h / 2, text, ha="right", va="center",
                fontsize=8, **kw)


def reconstructions(
    images: np.ndarray,
    recons: np.ndarray,
    error_maps: np.ndarray,
    scores: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    out_path: str | Path,
    normal_group: str = "normal",
    per_group: int = 8,
) -> Path:
    """Original / reconstruction / error heat-map rows for a sample of each group.

    Args:
        images: (K, C, H, W) originals in [0, 1].
        recons: (K, C, H, W) reconstructions.
        error_maps: (K, H, W) per-pixel errors, shown on one shared colour scale.
        scores: (K,) anomaly scores, written above each original.
        groups: (K,) group names; the normal group comes first.
        out_path: PNG to write.
        normal_group: name of the normal group.
        per_group: at most this many images per group (columns).

    Returns:
        ``out_path`` as a Path.
    """
    import matplotlib

    groups = np.asarray(groups, dtype=str)
    scores = np.asarray(scores, dtype=float)
    names = sorted(set(groups.tolist()), key=lambda g: (g != normal_group, g))
    if not names:
        with figure(out_path, figsize=(5, 2)) as (fig, ax):
            message(ax, "No sample images were saved for this run.")
        return Path(out_path)
    errors = np.nan_to_num(np.asarray(error_maps, dtype=float))
    # One colour scale for every heat map, so that brighter means larger error everywhere.
    vmax = float(np.percentile(errors, 99.5)) if errors.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    cmap = matplotlib.colormaps["inferno"]
    n_cols = min(per_group, max(int((groups == g).sum()) for g in names))
    # Per group: a caption gap above the originals, a small gap before the next group.
    gaps = [g for _ in names for g in (0.15, 0.0, 0.0)]
    gaps[3::3] = [0.45] * (len(names) - 1)
    mosaic = _Mosaic(images.shape[2:], n_cols, gaps)
    for g, name in enumerate(names):
        for c, k in enumerate(np.flatnonzero(groups == name)[:n_cols]):
            mosaic.put(3 * g, c, _rgb(images[k]))
            mosaic.put(3 * g + 1, c, _rgb(recons[k]))
            mosaic.put(3 * g + 2, c, cmap(np.clip(errors[k] / vmax, 0, 1))[:, :, :3])
    with mosaic.figure(out_path) as (fig, ax):
        mosaic.draw(ax)
        for g, name in enumerate(names):
            for c, k in enumerate(np.flatnonzero(groups == name)[:n_cols]):
                mosaic.caption(ax, 3 * g, c, fmt(scores[k]))
            color = NORMAL_COLOR if name == normal_group else ANOMALY_COLOR
            mosaic.row_label(ax, 3 * g, f"{name}\noriginal", color=color, fontweight="bold")
            mosaic.row_label(ax, 3 * g + 1, "reconstruction")
            mosaic.row_label(ax, 3 * g + 2, "error")
        heat = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, vmax), cmap)
        cbar = fig.colorbar(heat, ax=ax, shrink=min(0.6, 2.0 / len(gaps) + 0.2), pad=0.02)
        cbar.set_label("per-pixel error", fontsize=8)
        ax.set_title("Reconstructions (score above each original)", fontweight="bold",
                     pad=14)
    return Path(out_path)


CAPTION_CHARS = 20  # what a gallery caption shows of an id


def short_id(image_id: str, width: int = CAPTION_CHARS) -> str:
    """An image id cut to at most ``width`` characters for a caption, keeping its end (a
    file's name says more than its folders), at a folder boundary where one fits.

    >>> short_id("test/blowhole/exp1_num_4.jpg"), short_id("test:123+gaussian")
    ('…/exp1_num_4.jpg', 'test:123+gaussian')
    >>> short_id("photos/IMG_20240102_101112_HDR.jpg")
    '…0102_101112_HDR.jpg'
    """
    if len(image_id) <= width:
        return image_id
    *folders, tail = image_id.split("/")
    if folders and len(tail) + 2 <= width:
        for folder in reversed(folders):
            if len(folder) + 1 + len(tail) + 2 > width:
                break
            tail = f"{folder}/{tail}"
        return "…/" + tail
    return "…" + image_id[-(width - 1):]


def image_caption(score: float, label: Any = None, image_id: str | None = None,
                  width: int = CAPTION_CHARS) -> str:
    """The lines under a pictured image: its score, its label (a class name or number; a
    negative number is unknown) and its id, shortened by :func:`short_id`.

    >>> image_caption(0.01234, "blowhole", "test/blowhole/exp1_num_4.jpg")
    '0.01234\\nlabel blowhole\\n…/exp1_num_4.jpg'
    >>> image_caption(2.5, -1)
    '2.5\\nlabel ?'
    """
    lines = [fmt(score)]
    if label is not None:
        unknown = isinstance(label, (int, np.integer)) and int(label) < 0
        lines.append("label ?" if unknown else f"label {label}")
    if image_id is not None:
        lines.append(short_id(str(image_id), width))
    return "\n".join(lines)


def gallery(
    images: np.ndarray,
    scores: np.ndarray,
    out_path: str | Path,
    k: int = 16,
    labels: Sequence[Any] | np.ndarray | None = None,
    ids: Sequence[str] | np.ndarray | None = None,
    title: str = "Top outliers",
) -> Path:
    """The k highest-scoring images and the k most normal ones, each captioned.

    Args:
        images: (N, C, H, W) images in [0, 1].
        scores: (N,) anomaly scores (higher = more anomalous).
        out_path: PNG to write.
        k: images in each block (top and bottom); fewer when N < 2k.
        labels: (N,) labels shown in captions: class names, or numbers (-1 = unknown); or
            None.
        ids: (N,) identifiers shown in captions (their ends, :func:`short_id`), or None.
        title: figure title.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ReconadError: images and scores do not match, or k < 1.
    """
    images = np.asarray(images)
    scores = np.asarray(scores, dtype=float).ravel()
    if images.ndim != 4 or images.shape[0] != scores.shape[0]:
        raise ReconadError(f"gallery needs images of shape (N, C, H, W) and N scores; got "
                           f"images {images.shape} and {scores.shape[0]} scores")
    if k < 1:
        raise ReconadError(f"gallery size k must be at least 1 (got {k})")
    if labels is not None and len(labels) != len(scores):
        raise ReconadError(f"gallery got {len(labels)} labels for {len(scores)} images; pass "
                           f"one label per image")
    if len(scores) == 0:
        with figure(out_path, figsize=(5, 2)) as (fig, ax):
            message(ax, "No images to show.")
        return Path(out_path)
    top, bottom = select_extremes(scores, k)
    blocks = [(top, "highest scores (most anomalous)", ANOMALY_COLOR)]
    if bottom.size:
        blocks.append((bottom, "lowest scores (most normal)", NORMAL_COLOR))
    n_cols = min(8, top.size)
    n_caption = 1 + (labels is not None) + (ids is not None)
    gaps, row_of = [], []
    for b, (idx, _, _) in enumerate(blocks):
        n_rows = -(-idx.size // n_cols)
        row_of.append(len(gaps))
        # Caption lines above every row; a heading above each block.
        line = 0.11  # one caption line, in tile heights
        gaps += [line * n_caption + (0.3 if b else 0.2)] + [line * n_caption + 0.04] * (
            n_rows - 1)
    mosaic = _Mosaic(images.shape[2:], n_cols, gaps)
    for (idx, _, color), first in zip(blocks, row_of, strict=True):
        for j, i in enumerate(idx):
            mosaic.put(first + j // n_cols, j % n_cols, _rgb(images[i]), frame=color)
    captions: list[str] = []
    with mosaic.figure(out_path, inches_per_tile=1.2) as (fig, ax):
        mosaic.draw(ax)
        for (idx, heading, color), first in zip(blocks, row_of, strict=True):
            for j, i in enumerate(idx):
                caption = image_caption(scores[i], None if labels is None else labels[i],
                                        None if ids is None else ids[i])
                mosaic.caption(ax, first + j // n_cols, j % n_cols, caption)
                captions.append(caption.replace("\n", ", "))
            ax.text(0, mosaic.tops[first] - 2 * mosaic.pad - line * n_caption * mosaic.h,
                    heading, ha="left", va="bottom", fontsize=9.5, fontweight="bold",
                    color=color)
        ax.set_title(title, fontweight="bold", pad=20)
        note(fig, "Captions: " + "; ".join(captions))  # the PNG's text, for people and tests
    return Path(out_path)

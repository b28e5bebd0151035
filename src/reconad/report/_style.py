"""The one chart style of reconad: colours, rc settings, and the figure every chart is drawn in.

Every PNG reconad writes (a run's plots, the image grids, ``reconad compare``, the sweep
charts) is drawn inside :func:`figure`, so they share fonts, grid, colours and resolution, are
written atomically, and never touch pyplot's global state. matplotlib is imported inside the
functions, so importing this module stays light.

Conventions every chart follows:

- the normal group is ``NORMAL_COLOR`` and drawn first; anomaly groups take ``PALETTE``;
- thresholds have their own colour cycle (``THRESHOLD_COLORS``), so a threshold line is never
  mistaken for a group, and the chosen threshold is drawn bolder (:func:`threshold_style`);
- a chart never fails on awkward data: non-finite scores are left out and counted in the title
  (:func:`finite_only`, :func:`omitted_note`), and a chart that cannot be drawn shows a short
  explanation instead (:func:`message`);
- numbers in a chart are written with :func:`fmt`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reconad.files import atomic_file

NORMAL_COLOR = "#3b75af"
ANOMALY_COLOR = "#c8403a"
# Anomaly groups (normal is always NORMAL_COLOR) and threshold methods have separate colour
# cycles, so a threshold line is never mistaken for a group; the chosen threshold is bolder.
PALETTE = ["#c8403a", "#e08b2c", "#a0522d", "#d4a017", "#e377c2", "#8c564b"]
THRESHOLD_COLORS = ["#6a3d9a", "#1b9e77", "#5a9e4b", "#b3528f", "#7a6a55", "#17becf", "#444444"]
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*"]
DPI = 110

RC_STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "font.size": 10,
}


@contextmanager
def figure(
    out_path: str | Path, *, figsize: tuple[float, float] | None = None, **subplots: Any
) -> Iterator[tuple[Any, Any]]:
    """Draw one chart in the house style and write it as a PNG, atomically, on exit.

    Yields ``(fig, axes)`` like ``plt.subplots``; the figure is made without pyplot, so drawing
    never changes the user's backend or leaves figures open in a notebook. The PNG is saved at
    ``DPI`` with a tight bounding box, and its ``Description`` metadata holds the sentences
    added with :func:`note` (or :func:`message`). Nothing is written if drawing raises.

    Args:
        out_path: the PNG to write (its folder is created).
        figsize: (width, height) in inches; matplotlib's default when None.
        **subplots: passed to ``Figure.subplots`` (``nrows``, ``ncols``, ``sharex``...).

    Yields:
        ``(fig, axes)``: a matplotlib Figure and what ``Figure.subplots`` returns.

    Example:
        >>> from reconad.report import figure
        >>> with figure("ranking.png", figsize=(6, 4)) as (fig, ax):   # doctest: +SKIP
        ...     ax.barh(range(3), [0.91, 0.88, 0.80])
        ...     ax.set_title("configurations ranked by AUROC")
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(RC_STYLE):
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        axes = fig.subplots(**subplots)
        yield fig, axes
        # The PNG's Description says what the plot states in words (a message instead
        # of a curve, AUROC...), for people and tests that read the file.
        meta = {"Software": "reconad", "Description": getattr(fig, "reconad_note", "")}
        with atomic_file(out_path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata=meta)


def note(fig: Any, text: str) -> None:
    """Add a sentence to the PNG's Description metadata (written by :func:`figure`)."""
    fig.reconad_note = " ".join(filter(None, [getattr(fig, "reconad_note", ""), text]))


def message(ax: Any, text: str) -> None:
    """Replace an axis' content by a centred explanation (used when a plot cannot be drawn)."""
    note(ax.figure, text)
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11, color="#555555",
            transform=ax.transAxes)


def fmt(value: float) -> str:
    """A number as charts show it: four significant digits (``0.01234``, ``1.235e+04``)."""
    return f"{value:.4g}"


def finite_only(scores: np.ndarray, *aligned: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drop non-finite scores (a diverged model) from scores and the arrays aligned with them."""
    keep = np.isfinite(scores)
    return (scores[keep], *(a[keep] for a in aligned))


def omitted_note(n_omitted: int) -> str:
    """The title suffix that counts the scores :func:`finite_only` left out ("" when none)."""
    return f" ({n_omitted} non-finite scores omitted)" if n_omitted else ""


def threshold_style(i: int, name: str, chosen: str | None) -> dict[str, Any]:
    """Line keywords for the i-th threshold; the chosen one solid and bold, the others dashed."""
    emphasised = name == chosen
    return {
        "color": THRESHOLD_COLORS[i % len(THRESHOLD_COLORS)],
        "linewidth": 2.6 if emphasised else 1.1,
        "linestyle": "-" if emphasised else "--",
        "alpha": 1.0 if emphasised else 0.8,
        "zorder": 5 if emphasised else 3,
    }


def legend_below(ax: Any) -> None:
    """A legend under the axes: with seven thresholds it would cover the data inside."""
    n = len(ax.get_legend_handles_labels()[1])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2 if n > 3 else n,
              columnspacing=1.2, handlelength=1.8)

"""Everything reconad draws and writes for people: charts, image grids, report.html, compare.

The chart style is public, so that every chart of reconad looks the same (the sweep's too):
draw inside :func:`figure`, a context manager that yields ``(fig, axes)`` like
``plt.subplots`` in the house style and writes the PNG atomically on exit, and use the colours
below.

>>> from reconad.report import figure, NORMAL_COLOR
>>> with figure("sweep/ranking-auroc.png", figsize=(9, 4)) as (fig, ax):   # doctest: +SKIP
...     ax.barh(range(3), [0.91, 0.88, 0.80], color=NORMAL_COLOR)
...     ax.set_title("configurations ranked by AUROC")
>>> write_report("runs/first")                                            # doctest: +SKIP
PosixPath('runs/first/report.html')

Style (``_style``): :func:`figure`, :func:`message` (an explanation instead of a chart),
:func:`note` (a sentence in the PNG's metadata), :func:`fmt` (numbers in charts),
``NORMAL_COLOR``, ``ANOMALY_COLOR``, ``PALETTE``, ``THRESHOLD_COLORS``, ``MARKERS``, ``DPI``.

Charts from plain NumPy data, each writing one PNG and returning its path: learning curve,
score distributions, confusion matrix and scores per class (``_plots``); ROC and
precision-recall curves with the thresholds' operating points (``_curves``); reconstruction
grids and the gallery of extreme scores, and the captions under pictured images
(``_pictures``: :func:`image_caption`, :func:`short_id`); ``metric_bars`` (``_compare``).

From a run directory: :func:`write_plots` and :func:`write_report` (``_report``, rendering in
``_html``), :func:`compare_runs` (``reconad compare``), :func:`print_summary` (the terminal
tables at the end of a run). matplotlib is imported only when drawing.
"""

from reconad.report._compare import compare_runs, headline, metric_bars
from reconad.report._curves import operating_points, precision_recall_curve, roc_curve
from reconad.report._html import CSS, ReportFigure, format_number, img_tag, render_report
from reconad.report._overlays import (
    defect_overlays,
    heatmap_pngs,
    heatmap_rgb,
    heatmap_scale,
    map_file_name,
    overlay_caption,
    write_heatmaps,
)
from reconad.report._pictures import (
    gallery,
    image_caption,
    reconstructions,
    select_extremes,
    short_id,
)
from reconad.report._plots import (
    class_boxplot,
    confusion_matrix,
    learning_curve,
    score_distributions,
)
from reconad.report._report import write_plots, write_report
from reconad.report._style import (
    ANOMALY_COLOR,
    DPI,
    MARKERS,
    NORMAL_COLOR,
    PALETTE,
    THRESHOLD_COLORS,
    figure,
    fmt,
    message,
    note,
)
from reconad.report._summary import print_summary

__all__ = [
    "defect_overlays",
    "heatmap_pngs",
    "heatmap_rgb",
    "heatmap_scale",
    "map_file_name",
    "overlay_caption",
    "write_heatmaps",
    "ANOMALY_COLOR",
    "CSS",
    "DPI",
    "MARKERS",
    "NORMAL_COLOR",
    "PALETTE",
    "THRESHOLD_COLORS",
    "ReportFigure",
    "class_boxplot",
    "compare_runs",
    "confusion_matrix",
    "figure",
    "fmt",
    "format_number",
    "gallery",
    "headline",
    "image_caption",
    "img_tag",
    "learning_curve",
    "message",
    "metric_bars",
    "note",
    "operating_points",
    "precision_recall_curve",
    "print_summary",
    "reconstructions",
    "render_report",
    "roc_curve",
    "score_distributions",
    "select_extremes",
    "short_id",
    "write_plots",
    "write_report",
]

"""The summary tables printed in the terminal at the end of a run (from metrics.json alone)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from reconad.rundir import SET_ORDER


def _fmt(value, digits: int = 4) -> str:
    """Fixed decimals, so that the columns of a terminal table line up."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def print_summary(metrics: dict, console: Console | None = None) -> None:
    """Print per-set AUROC/AP and every threshold's operating point on each set."""
    console = console or Console()
    sets = [name for name in SET_ORDER if name in metrics]
    overview = Table(title=f"{metrics['name']} — {metrics['scenario']}, score {metrics['score']}")
    for column in ("set", "normal", "anomaly", "AUROC", "AP"):
        overview.add_column(column, justify="right" if column != "set" else "left")
    for name in sets:
        m = metrics[name]
        overview.add_row(name, str(m["n_normal"]), str(m["n_anomaly"]), _fmt(m["auroc"]),
                         _fmt(m["average_precision"]))
    console.print(overview)

    chosen = metrics["chosen_threshold"]
    for name in sets:
        table = Table(title=f"{name}: thresholds (chosen: {chosen}; flag = score > value)")
        for column in ("method", "value", "TPR", "FPR", "precision", "recall", "F1", "accuracy"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for method, t in metrics[name]["thresholds"].items():
            style = "bold" if method == chosen else None
            table.add_row(method, _fmt(t["value"], 6), _fmt(t["tpr"]), _fmt(t["fpr"]),
                          _fmt(t["precision"]), _fmt(t["recall"]), _fmt(t["f1"]),
                          _fmt(t["accuracy"]), style=style)
        console.print(table)
    training = metrics["training"]
    console.print(
        f"trained {training['epochs_run']} epochs (best {training['best_epoch']}"
        f"{', stopped early' if training['stopped_early'] else ''}"
        f"{', interrupted' if training['interrupted'] else ''}) in "
        f"{training['train_seconds']:.1f} s; whole run {metrics['wall_seconds']:.1f} s")

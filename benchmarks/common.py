"""What every benchmark shares: configs with the run's budget, evaluation, statistics, output.

A benchmark is a function ``fn(ctx: Context) -> (headline, rows)``: ``headline`` is the dict of
numbers that goes to the top level of NAME.json, ``rows`` a list of flat dicts (one per run,
same keys) that becomes NAME.csv and the table in NAME.md. It runs the seeds of
``ctx.seed_list``. A benchmark that draws a picture writes ``ctx.out / f"{ctx.stem}.png"``
itself with :func:`bar_plot`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reconad.config import Config, ThresholdConfig, load_config
from reconad.detector import Detector
from reconad.evaluation import evaluate_sets
from reconad.scenarios import Splits

# --quick: a budget for trying a benchmark out (minutes on 2 cores), not for numbers.
QUICK_OVERRIDES = ["data.max_train=3000", "data.max_test=1000", "train.epochs=2"]


@dataclass
class Context:
    """The command line of one benchmark run, as the benchmark functions need it."""

    name: str
    out: Path
    quick: bool = False
    seeds: int = 1
    seed_start: int = 0
    """The first seed: 0 for the numbers reported, e.g. 100 for the seeds settings are chosen on."""
    data_dir: str | None = None
    sets: list[str] = field(default_factory=list)
    """Extra ``section.key=value`` overrides applied last to every reconad config."""
    workers: int = 1
    """``serve``: worker processes of the service."""

    @property
    def seed_list(self) -> list[int]:
        """The seeds every benchmark runs: ``seed_start`` .. ``seed_start + seeds - 1``."""
        return list(range(self.seed_start, self.seed_start + self.seeds))

    @property
    def stem(self) -> str:
        """The output files' name: NAME for the reported seeds (from 0), NAME-selection for
        selection seeds, so that choosing a setting never overwrites the numbers reported."""
        return self.name if self.seed_start == 0 else f"{self.name}-selection"

    def config(self, preset: str, overrides: list[str] | None = None) -> Config:
        """``preset`` with the quick budget, the data folder, ``overrides``, then ``--set``."""
        extra = list(QUICK_OVERRIDES) if self.quick else []
        if self.data_dir:
            extra.append(f"data.data_dir={self.data_dir}")
        return load_config(preset, extra + list(overrides or []) + list(self.sets))


# --------------------------------------------------------------------------- evaluation


def evaluate_detector(detector: Detector, splits: Splits, threshold: ThresholdConfig) -> dict:
    """metrics.json's per-set entries of a fitted reconad detector on (possibly other) splits.

    Thresholds are chosen on dev and applied to every set, as a run does
    (:func:`reconad.evaluation.evaluate_sets`, which other scorers call directly).
    """
    scores = {name: detector.anomaly_score(s.x) for name, s in splits.sets.items()}
    return evaluate_sets(scores, splits, detector.val_scores_, threshold)[1]


def at(metrics_set: dict, method: str, key: str) -> float | None:
    """One rate (precision, recall, f1, ...) of a set at a threshold method, or None."""
    return metrics_set["thresholds"].get(method, {}).get(key)


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (None with fewer than two values); None values are skipped."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


# --------------------------------------------------------------------------- output


def machine() -> dict:
    """Cores, CPU model (from /proc/cpuinfo), torch threads and versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return "" if value is None else str(value)


def write_results(out: Path, name: str, report: dict, rows: list[dict]) -> list[Path]:
    """NAME.json (``report``: headline keys at the top, plus ``rows``), NAME.csv, NAME.md."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.csv", out / f"{name}.md"]
    paths[0].write_text(json.dumps({**report, "rows": rows}, indent=2) + "\n")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {name}", "", f"`{report['command']}`  ", f"{report['date']}, "
             f"{report['machine']['cores']} cores, {report['machine']['cpu']}, "
             f"wall {report['wall_seconds']:.0f} s", ""]
    headline = {k: v for k, v in report.items()
                if k not in ("command", "date", "machine", "wall_seconds")}
    lines += [f"- **{k}**: {_cell(v) if not isinstance(v, dict) else json.dumps(v)}"
              for k, v in headline.items()]
    lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]
    paths[2].write_text("\n".join(lines) + "\n")
    return paths


def bar_plot(path: Path, categories: list[str], series: dict[str, list[float | None]],
             ylabel: str, title: str, errors: dict[str, list[float | None]] | None = None,
             ylim: tuple[float, float] | None = None) -> Path:
    """Grouped bars: one group per category, one bar per series (None drawn as 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories) * max(1, len(series))), 4))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    for i, (label, values) in enumerate(series.items()):
        err = (errors or {}).get(label)
        if err is not None and all(e is None for e in err):
            err = None  # one seed: no error bars
        ax.bar(x + i * width - 0.4 + width / 2, [v or 0.0 for v in values], width, label=label,
               yerr=None if err is None else [e or 0.0 for e in err], capsize=3)
    crowded = len(categories) > 6 or max(map(len, categories)) > 14
    ax.set_xticks(x, categories, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""One run: config → data → splits → fitted detector → scores, thresholds, metrics → run dir.

>>> from reconad.config import load_config
>>> result = run(load_config("default"), out_dir="runs/first")
>>> result.metrics["eval"]["auroc"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console

from reconad import __version__
from reconad.config import Config, config_to_yaml
from reconad.data import load_dataset
from reconad.detector import Detector
from reconad.errors import ReconadError
from reconad.files import atomic_directory, check_writable, write_json_atomic
from reconad.metrics import group_stats
from reconad.rundir import write_history, write_scores
from reconad.scenarios import EvalSet, Splits, make_splits
from reconad.thresholds import evaluate_sets

SAMPLES_PER_GROUP = 8
GALLERY_SIZE = 16


@dataclass
class RunResult:
    """What a run produced: its directory (None when not written), metrics and detector."""

    run_dir: Path | None
    metrics: dict
    detector: Detector
    sizes: dict


def default_run_dir(config: Config) -> Path:
    """``runs/NAME-YYYYmmdd-HHMMSS`` in the current directory."""
    return Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"


def run(
    config: Config,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    write: bool = True,
    overwrite: bool = False,
    console: Console | None = None,
    report: bool = True,
) -> RunResult:
    """Run the experiment ``config`` describes and write its run directory.

    Args:
        config: the validated configuration (see :func:`reconad.config.load_config`).
        out_dir: the run directory to create (default ``runs/NAME-TIMESTAMP``).
        progress: print group sizes and show a training progress bar.
        write: write the run directory (False: only compute and return the metrics).
        overwrite: replace an existing non-empty ``out_dir``.
        console: where to print (default: stderr).
        report: also write the HTML report (sweeps skip it: seconds per trial).
    """
    started = time.perf_counter()
    console = console or Console(stderr=True, quiet=not progress)
    out = Path(out_dir) if out_dir is not None else default_run_dir(config)
    if write:
        check_writable(out, overwrite)  # fail before training, not after

    dataset = load_dataset(config.data, config.seed)
    splits = make_splits(dataset, config.scenario, config.seed)
    sizes = splits.sizes()
    console.print(f"[bold]{config.name}[/]: {config.scenario.kind} on {dataset.name}, images "
                  f"{'x'.join(map(str, dataset.image_shape))}")
    console.print(_describe_sizes(sizes))

    if config.model.class_head and splits.train_labels is None:
        raise ReconadError(
            f"model.class_head needs class labels on the training images, but the "
            f"{config.scenario.kind} scenario trains on {splits.train_group} images without "
            "them; set model.class_head=false")
    detector = Detector(
        model=config.model, loss=config.loss, train=config.train, score=config.score,
        quantile=config.threshold.quantile, seed=config.seed, progress=progress,
    ).fit(splits.train, y=splits.train_labels if config.model.class_head else None,
          X_val=splits.val, preprocessing={
              "resize": list(config.data.resize) if config.data.resize else None,
              "grayscale": config.data.grayscale})
    if detector.history_.interrupted:
        console.print("[yellow]training interrupted: keeping the best model so far[/]")

    scores = {name: detector.anomaly_score(s.x) for name, s in splits.sets.items()}
    thresholds, set_metrics = evaluate_sets(scores, splits, detector.val_scores_,
                                            config.threshold)
    chosen = config.threshold.method
    if thresholds.get(chosen) is None:
        raise ReconadError(f"threshold.method={chosen} cannot be computed on this development "
                           "set (it needs both normal and anomalous images); use "
                           "threshold.method=quantile")
    detector.set_threshold(thresholds[chosen], chosen)

    metrics = {
        "reconad_version": __version__, "name": config.name, "scenario": config.scenario.kind,
        "score": config.score.kind, "score_parts": list(config.score.parts),
        "chosen_threshold": chosen,
        "training": detector.history_.summary(),
        "train": {"groups": group_stats(detector.anomaly_score(splits.train),
                                        np.full(len(splits.train), splits.train_group))},
    }
    metrics.update(set_metrics)  # one entry per evaluated set, thresholds chosen on dev

    run_dir = None
    if write:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            _write_run(tmp, config, detector, splits, scores, metrics, sizes, started, report)
        run_dir = out
    else:
        metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    return RunResult(run_dir=run_dir, metrics=metrics, detector=detector, sizes=sizes)


def _describe_sizes(sizes: dict) -> str:
    parts = []
    for key, value in sizes.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{g} {n}" for g, n in value.items())
            parts.append(f"{key} ({inner})")
        else:
            parts.append(f"{key} {value}")
    return "groups: " + "; ".join(parts)


def _write_run(tmp: Path, config: Config, detector: Detector, splits: Splits,
               scores: dict[str, np.ndarray], metrics: dict, sizes: dict, started: float,
               report: bool = True) -> None:
    """Every file of the run directory; wall_seconds covers all but the report itself."""
    (tmp / "config.yaml").write_text(config_to_yaml(config))
    detector.save(tmp / "detector.safetensors")
    write_json_atomic(tmp / "splits.json", sizes)
    write_history(tmp / "history.csv", detector.history_.rows)
    write_scores(tmp / "scores.csv", splits.sets, scores, detector.threshold_)
    _write_samples(tmp / "samples.npz", detector, splits.sets["eval"], scores["eval"], config.seed)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(tmp / "metrics.json", metrics)
    if not report:
        return
    from reconad.report import write_report  # lazy: plotting stays out of `import reconad`

    write_report(tmp)


def _write_samples(path: Path, detector: Detector, eval_set: EvalSet, scores: np.ndarray,
                   seed: int) -> None:
    """Images, reconstructions and error maps for the report's picture grids."""
    rng = np.random.default_rng(seed)
    picks, kinds = [], []
    for group in dict.fromkeys(eval_set.group.tolist()):
        members = np.flatnonzero(eval_set.group == group)
        chosen = rng.choice(members, size=min(SAMPLES_PER_GROUP, len(members)), replace=False)
        picks += sorted(chosen.tolist())
        kinds += ["sample"] * len(chosen)
    order = np.argsort(scores, kind="stable")
    top, bottom = order[::-1][:GALLERY_SIZE], order[:GALLERY_SIZE]
    picks += top.tolist() + bottom.tolist()
    kinds += ["top"] * len(top) + ["bottom"] * len(bottom)
    idx = np.asarray(picks, dtype=np.int64)
    images = eval_set.x[idx]
    np.savez_compressed(
        path,
        images=images.astype(np.float32),
        reconstructions=detector.reconstruct(images).astype(np.float32),
        error_maps=detector.error_maps(images).astype(np.float32),
        scores=scores[idx].astype(np.float64),
        groups=eval_set.group[idx].astype(str),
        labels=eval_set.label[idx].astype(np.int64),
        ids=eval_set.ids[idx].astype(str),
        sets=np.full(len(idx), "eval"),
        kinds=np.asarray(kinds),
    )

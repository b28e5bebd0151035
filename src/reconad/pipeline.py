"""One run: config → data → splits → fitted detector → scores, thresholds, metrics → run dir.

Needs MNIST and about 100 s, so the example is not run by the doctests (tests/test_pipeline.py
runs it on a subset):

>>> from reconad.config import load_config
>>> result = run(load_config("default"), out_dir="runs/first")  # doctest: +SKIP
>>> result.metrics["eval"]["auroc"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console

from reconad import __version__
from reconad.config import Config, config_to_yaml
from reconad.data import float_batch, load_dataset
from reconad.detector import Detector
from reconad.errors import ReconadError
from reconad.evaluation import (
    LocalizationAccumulator,
    evaluate_sets,
    group_stats,
    localization_metrics,
    localization_thresholds,
)
from reconad.files import (
    atomic_directory,
    check_writable,
    partial_dir_name,
    write_json_atomic,
    write_text_atomic,
)
from reconad.report import write_report
from reconad.rundir import write_history, write_scores
from reconad.scenarios import EvalSet, Splits, make_splits
from reconad.score import images_per_pass

SAMPLES_PER_GROUP = 8
GALLERY_SIZE = 16
CHECKPOINT = "checkpoint.pt"  # in the run's partial folder while training; never in the run
TRAIN_SCORE_SAMPLE = 5_000  # training images scored for metrics.json's "train" statistics
# Anomaly-map pixels made and counted at once for the localisation metrics (whole scoring
# passes: 21 maps of 3x256x256 images, 2,560 of MNIST), 8 MB of float32 maps.
MAP_PIXELS_PER_BATCH = 2**21


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
    resume: bool = False,
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
        resume: continue the training of an earlier run of ``out_dir`` that was killed,
            from its last finished epoch; the run ends with the same metrics as an
            uninterrupted one. Needs the same config; without a checkpoint it starts afresh.

    While the run is built, ``.NAME.lock`` beside ``out_dir`` makes a second run of the same
    ``out_dir`` fail at once, and ``.NAME.partial`` holds the files and the per-epoch
    training checkpoint until the finished run is renamed to ``out_dir``.
    """
    started = time.perf_counter()
    console = console or Console(stderr=True, quiet=not progress)
    if resume and (out_dir is None or not write):
        raise ReconadError("resume needs the out_dir of the run to continue (and write=True)")
    out = Path(out_dir) if out_dir is not None else default_run_dir(config)
    with ExitStack() as stack:
        tmp = None
        if write:
            check_writable(out, overwrite)  # fail before training, not after
            _check_resumable(out, config, resume, console)
            tmp = stack.enter_context(atomic_directory(out, overwrite=overwrite, resume=resume))
            write_text_atomic(tmp / "config.yaml", config_to_yaml(config))
        return _run_in(config, out, tmp, progress, console, report, started)


def _check_resumable(out: Path, config: Config, resume: bool, console: Console) -> None:
    """With ``resume``, the interrupted run must have had the same config; without it, say
    that an interrupted run's checkpoint is being discarded."""
    partial = partial_dir_name(out)
    if not resume:
        if (partial / CHECKPOINT).is_file():
            console.print(f"[yellow]discarding the unfinished run in {partial} (pass --resume "
                          "to continue it)[/]")
        return
    saved = partial / "config.yaml"
    if not (partial / CHECKPOINT).is_file():
        console.print(f"[yellow]nothing to resume for {out} (no checkpoint in {partial}); "
                      "training from the first epoch[/]")
        return
    if saved.is_file() and saved.read_text() != config_to_yaml(config):
        raise ReconadError(f"cannot resume {out}: its config differs from the interrupted "
                           f"run's ({saved}); give the same preset and --set options, or drop "
                           "--resume to start afresh")


def _run_in(config: Config, out: Path, tmp: Path | None, progress: bool, console: Console,
            report: bool, started: float) -> RunResult:
    """The run itself; ``tmp`` is the locked partial folder to fill (None: write nothing)."""
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
              "grayscale": config.data.grayscale},
          checkpoint=None if tmp is None else tmp / CHECKPOINT)
    if detector.history_.resumed_after:
        console.print(f"resumed after epoch {detector.history_.resumed_after} from the checkpoint")
    if detector.history_.interrupted:
        console.print("[yellow]training interrupted: keeping the best model so far[/]")

    if not splits.sets["dev"].is_anomaly.any():
        console.print("the development set has no anomalies (the training data are all "
                      "normal): only the quantile threshold can be computed")
    scores = score_sets(detector, splits.sets)
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
        "class_names": None if dataset.class_names is None else list(dataset.class_names),
        "training": detector.history_.summary(),
        "train": {"groups": group_stats(detector.anomaly_score(_sample(splits.train, config.seed)),
                                        splits.train_group)},
    }
    metrics.update(set_metrics)  # one entry per evaluated set, thresholds chosen on dev
    for name, s in splits.sets.items():  # sets whose images have defect masks
        if s.masks is not None:
            metrics[name]["localization"] = localization(
                detector, s, _kinds(s, dataset.class_names), config.seed)

    run_dir = None
    if tmp is not None:
        _write_run(tmp, config, detector, splits, scores, metrics, sizes, started, report)
        (tmp / CHECKPOINT).unlink(missing_ok=True)
        run_dir = out
    else:
        metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    return RunResult(run_dir=run_dir, metrics=metrics, detector=detector, sizes=sizes)


def score_sets(detector: Detector, sets: dict[str, EvalSet]) -> dict[str, np.ndarray]:
    """Each evaluated set's anomaly scores, (N,) float64 per set, every distinct image (by its
    id) scored once: a scenario's sets share their normal images (dev and eval both hold the
    normal test images), and a score does not depend on the batch it was computed in."""
    known: dict[str, float] = {}
    scores = {}
    for name, s in sets.items():
        ids = s.ids.astype(str)
        new = np.array([i for i, key in enumerate(ids) if key not in known], dtype=np.int64)
        if len(new) == len(ids):
            fresh = detector.anomaly_score(s.x)
        else:
            fresh = detector.anomaly_score(s.x[new]) if len(new) else np.empty(0)
        known.update(zip(ids[new].tolist(), fresh.tolist(), strict=True))
        scores[name] = np.array([known[key] for key in ids], dtype=np.float64)
    return scores


def localization(detector: Detector, s: EvalSet, groups: np.ndarray, seed: int) -> dict:
    """``s``'s pixel AUROC and AU-PRO (:class:`reconad.evaluation.LocalizationAccumulator`),
    each group's (``normal`` the normal images) with the normal images: the anomaly maps are
    made and counted a batch at a time, so memory does not grow with the number of images.
    The batches take the images in a seeded random order, so the first one, on which the
    thresholds are chosen, is a sample of the whole set."""
    masks = s.masks
    if not len(masks):
        return localization_metrics(np.zeros(masks.shape, np.float32), masks, groups, "normal")
    image_pixels = int(np.prod(masks.shape[1:]))
    pass_size = images_per_pass(s.x.shape[1:])
    step = pass_size * max(1, MAP_PIXELS_PER_BATCH // (pass_size * image_pixels))
    order = np.random.default_rng(seed).permutation(len(masks))
    accumulator = None
    for start in range(0, len(order), step):
        idx = np.sort(order[start:start + step])
        maps, batch_masks = detector.anomaly_maps(s.x[idx]), np.asarray(masks[idx])
        if accumulator is None:
            accumulator = LocalizationAccumulator(
                localization_thresholds(maps, batch_masks, seed=seed), normal_group="normal")
        accumulator.add(maps, batch_masks, groups[idx])
    return accumulator.result()


def _sample(images: np.ndarray, seed: int) -> np.ndarray:
    """At most :data:`TRAIN_SCORE_SAMPLE` of the training images (seeded, in stored order): the
    training scores' statistics in metrics.json, without scoring every training image."""
    if len(images) <= TRAIN_SCORE_SAMPLE:
        return images
    keep = np.random.default_rng(seed).choice(len(images), TRAIN_SCORE_SAMPLE, replace=False)
    return images[np.sort(keep)]


def _kinds(s: EvalSet, class_names: tuple[str, ...] | None) -> np.ndarray:
    """Each image's group for the localisation metrics: ``normal`` or its defect kind's name."""
    if class_names is None:
        return s.group
    return np.array(["normal" if not a else class_names[lab] if 0 <= lab < len(class_names)
                     else g for a, lab, g in zip(s.is_anomaly, s.label, s.group, strict=True)])


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
    _write_samples(tmp / "samples.npz", detector, splits.sets["eval"], scores["eval"], config.seed,
                   splits.val)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(tmp / "metrics.json", metrics)
    if not report:
        return
    write_report(tmp)


def _write_samples(path: Path, detector: Detector, eval_set: EvalSet, scores: np.ndarray,
                   seed: int, val: np.ndarray) -> None:
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
    images = float_batch(np.asarray(eval_set.x[idx]))  # (K, C, H, W) float32 in [0, 1]
    extra = {}
    if eval_set.masks is not None:  # defect masks and the outline threshold of the overlays
        extra = {"masks": eval_set.masks[idx],
                 "map_threshold": np.float64(np.quantile(detector.anomaly_maps(val), 0.99))}
    maps = (detector.anomaly_maps(images) if detector.scorer_.config.map != "none"
            else detector.error_maps(images))
    np.savez_compressed(
        path,
        **extra,
        images=images,
        reconstructions=detector.reconstruct(images).astype(np.float32),
        error_maps=maps.astype(np.float32),
        scores=scores[idx].astype(np.float64),
        groups=eval_set.group[idx].astype(str),
        labels=eval_set.label[idx].astype(np.int64),
        ids=eval_set.ids[idx].astype(str),
        sets=np.full(len(idx), "eval"),
        kinds=np.asarray(kinds),
    )

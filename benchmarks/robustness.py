"""Robustness: every general-purpose preset, as shipped, on collections of other sources and
sizes, beside a kNN-on-pixels baseline of the same split.

For each collection of :mod:`benchmarks.robustness_data` (MNIST, scikit-learn's 8x8 digits,
MNIST at 14x14 and 56x56, inverted and colourised MNIST, photo crops, generated textures) and
each preset of :data:`PRESETS` that ships (a missing one is skipped with a note), one
``reconad.pipeline.run`` per seed with only ``data.*`` and ``scenario.*`` overrides: the
collection's files and its one holdout scenario, the same for every preset. A preset that
refuses a collection (a one-line ``ReconadError``, e.g. a training crop larger than the
images) gets a row saying so and ranks last there.

Baseline (no training): scikit-learn ``NearestNeighbors`` on the raw pixels (float32 in
[0, 1]) of the normal training images of the same split; an image's score is its mean
Euclidean distance to its :data:`KNN_K` nearest (:func:`knn_scores`).

Per collection and entry (preset or baseline): dev and eval AUROC (means over seeds), and the
entry's rank among all entries by each (1 = best; ties share the mean rank). Headline:
``auroc`` per collection and entry, ``mean_rank_dev`` / ``mean_rank_eval`` over the
collections, the ``default`` preset's rows on the 8x8 digits (the issue's target: dev >= 0.95,
eval >= 0.93) and every ``below_knn`` cell (an entry whose AUROC is below the baseline's).

    python benchmarks/run.py robustness [--quick] [--seeds N] [--set train.threads=1]
    python -m benchmarks.robustness --seeds 100 101 102 --presets default \\
        --collections digits-8x8 --variant notta:default:score.tta_shift=0 --out DIR

The second form (choosing settings on selection seeds) runs a subset, and variants: a preset
with extra overrides, judged beside it. Collections are written to a temporary folder (or
``--cache DIR``, reused when complete), never to the results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from reconad.config import Config, config_to_yaml, preset_names
from reconad.data import float_batch, load_dataset
from reconad.errors import ReconadError
from reconad.pipeline import run
from reconad.scenarios import Splits, make_splits

from .common import Context, machine, mean_std, write_results
from .robustness_data import COLLECTIONS, VERSION, build

PRESETS = ("default", "one-class-mnist", "conv-rgb", "defects", "defects-ssim")
BASELINE = "pixel kNN"
KNN_K = 5
TARGET = {"collection": "digits-8x8", "preset": "default", "dev": 0.95, "eval": 0.93}
SETS = ("dev", "eval")


def knn_scores(train: np.ndarray, images: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Mean Euclidean distance of each image ``(M, C, H, W)`` to its ``k`` nearest training
    images ``(N, C, H, W)`` on raw pixels (float32 in [0, 1]): ``(M,)`` float64."""
    fit = float_batch(np.asarray(train)).reshape(len(train), -1)
    query = float_batch(np.asarray(images)).reshape(len(images), -1)
    distance, _ = NearestNeighbors(n_neighbors=min(k, len(fit))).fit(fit).kneighbors(query)
    return distance.mean(axis=1).astype(np.float64)


def baseline_row(splits: Splits) -> dict:
    """The kNN baseline's AUROC on each set of ``splits`` (fitted on its training normals)."""
    row: dict = {}
    started = time.perf_counter()
    for name in SETS:
        s = splits.sets.get(name)
        row[f"{name}_auroc"] = None if s is None else float(
            roc_auc_score(s.is_anomaly, knn_scores(splits.train, s.x)))
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def preset_row(ctx: Context, preset: str, overrides: list[str]) -> dict:
    """One run of ``preset`` with ``overrides``: its dev/eval AUROC, or why it refused."""
    started = time.perf_counter()
    try:
        result = run(ctx.config(preset, overrides), out_dir=None, progress=False, write=False)
    except ReconadError as exc:
        return {"refused": str(exc), "seconds": round(time.perf_counter() - started, 1)}
    m = result.metrics
    return {**{f"{name}_auroc": m[name]["auroc"] if name in m else None for name in SETS},
            "epochs_run": m["training"]["epochs_run"],
            "seconds": round(time.perf_counter() - started, 1)}


def available(presets: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The presets that ship, and a note for each that does not."""
    shipped = set(preset_names())
    return ([p for p in presets if p in shipped],
            {p: "not shipped in this version; skipped" for p in presets if p not in shipped})


@contextmanager
def cache_folder(cache: Path | None):
    """``cache`` itself, or a temporary folder removed afterwards."""
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        yield cache
        return
    with tempfile.TemporaryDirectory(prefix="reconad-robustness-") as tmp:
        yield Path(tmp)


def robustness(ctx: Context, presets: tuple[str, ...] = PRESETS,
               collections: list[str] | None = None, seeds: list[int] | None = None,
               variants: dict[str, tuple[str, list[str]]] | None = None,
               cache: Path | None = None) -> tuple[dict, list[dict]]:
    """run.py's benchmark contract: ``(headline, rows)``; see the module docstring.

    Every finished cell (collection, entry, seed) is appended to ``OUT/NAME.rows.jsonl`` with
    the resolved config it ran (:func:`cell_key`); a run finds there the cells it would
    compute again and reuses them, so an interrupted run resumes and several processes (each
    on some collections, ``python -m benchmarks.robustness --name robustness``) can share the
    work of one. Delete the file to run every cell afresh.

    Args:
        ctx: the run's budget (``quick``, ``seeds``, ``sets``, ``data_dir``).
        presets: presets to judge; those that do not ship are skipped with a note.
        collections: names of the collections (default: all).
        seeds: seeds to run (default ``0 .. ctx.seeds - 1``).
        variants: ``{label: (preset, extra overrides)}`` judged beside the presets.
        cache: folder to keep the collections in (default: a temporary folder).
    """
    shipped, missing = available(presets)
    entries = {p: (p, []) for p in shipped} | dict(variants or {})
    chosen = [c for c in COLLECTIONS if collections is None or c.name in collections]
    seeds = list(ctx.seed_list) if seeds is None else seeds
    journal = ctx.out / f"{ctx.name}.rows.jsonl"
    rows: list[dict] = []

    def cell(key: str, compute, *args) -> None:
        done = _finished(journal)
        row = done[key] if key in done else {**compute(*args), "key": key}
        if key not in done:
            with journal.open("a") as f:  # one short line per write: appends do not mix
                f.write(json.dumps(row) + "\n")
        rows.append({k: v for k, v in row.items() if k != "key"})
        print(json.dumps(rows[-1]) + ("  (reused)" if key in done else ""), flush=True)

    with cache_folder(cache) as folder:
        for collection in chosen:
            overrides = build(collection, folder, ctx.quick, ctx.data_dir)
            for seed in seeds:
                at = [*overrides, f"seed={seed}", f"name={collection.name}"]
                cfg = ctx.config("default", at)
                head = {"collection": collection.name, "seed": seed}
                cell(cell_key(ctx, collection.name, BASELINE, at, "default"), _baseline_cell,
                     head, cfg)
                for label, (preset, extra) in entries.items():
                    cell(cell_key(ctx, collection.name, label, [*at, *extra], preset),
                         _preset_cell, head, label, ctx, preset, [*at, *extra])
    headline = summarise(rows, [BASELINE, *entries], [c.name for c in chosen])
    headline = {"presets": shipped, "missing_presets": missing, "seeds": seeds,
                "collections": {c.name: c.what for c in chosen}, **headline}
    return headline, rows


def _baseline_cell(head: dict, cfg: Config) -> dict:
    seed = cfg.seed
    splits = make_splits(load_dataset(cfg.data, seed), cfg.scenario, seed)
    return {**head, "entry": BASELINE, **baseline_row(splits)}


def _preset_cell(head: dict, label: str, ctx: Context, preset: str,
                 overrides: list[str]) -> dict:
    return {**head, "entry": label, **preset_row(ctx, preset, overrides)}


def cell_key(ctx: Context, collection: str, entry: str, overrides: list[str],
             preset: str) -> str:
    """What makes a cell: collection, entry, the budget and the resolved config it runs
    (a changed preset is a new cell), with the cache folder's path left out."""
    try:
        config = config_to_yaml(ctx.config(preset, overrides))
    except ReconadError as exc:  # refused before it runs: the refusal is the cell
        config = str(exc)
    config = "\n".join(line for line in config.splitlines() if "source:" not in line)
    digest = hashlib.sha256(config.encode()).hexdigest()[:16]
    return f"{collection}|{entry}|{ctx.quick}|{VERSION}|{digest}"


def _finished(journal: Path) -> dict[str, dict]:
    """The cells already in ``journal``, by key (a half-written last line is ignored)."""
    if not journal.is_file():
        return {}
    done = {}
    for line in journal.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[row["key"]] = row
    return done


def summarise(rows: list[dict], entries: list[str], collections: list[str]) -> dict:
    """AUROC means over seeds per collection and entry, ranks, mean ranks, target, misses."""
    auroc: dict = {}
    ranks: dict = {name: {e: [] for e in entries} for name in SETS}
    for c in collections:
        auroc[c] = {}
        for e in entries:
            mine = [r for r in rows if r["collection"] == c and r["entry"] == e]
            cell = {}
            for name in SETS:
                cell[name], cell[f"{name}_std"] = mean_std([r.get(f"{name}_auroc")
                                                            for r in mine])
            refused = sorted({r["refused"] for r in mine if "refused" in r})
            if refused:
                cell["refused"] = refused[0]
            auroc[c][e] = cell
        for name in SETS:
            for e, rank in rank_entries({e: auroc[c][e][name] for e in entries}).items():
                auroc[c][e][f"{name}_rank"] = rank
                ranks[name][e].append(rank)
    below = [{"collection": c, "entry": e, "set": name, "auroc": auroc[c][e][name],
              "baseline": auroc[c][BASELINE][name]}
             for c in collections for e in entries if e != BASELINE for name in SETS
             if auroc[c][BASELINE][name] is not None
             and (auroc[c][e][name] is None or auroc[c][e][name] < auroc[c][BASELINE][name])]
    target = None
    if TARGET["collection"] in auroc and TARGET["preset"] in auroc[TARGET["collection"]]:
        cell = auroc[TARGET["collection"]][TARGET["preset"]]
        target = {**TARGET, "measured_dev": cell["dev"], "measured_eval": cell["eval"],
                  "met": (cell["dev"] is not None and cell["eval"] is not None
                          and cell["dev"] >= TARGET["dev"] and cell["eval"] >= TARGET["eval"])}
    return {"auroc": auroc,
            "mean_rank_dev": {e: _mean(ranks["dev"][e]) for e in entries},
            "mean_rank_eval": {e: _mean(ranks["eval"][e]) for e in entries},
            "target": target, "below_knn": below}


def rank_entries(values: dict[str, float | None]) -> dict[str, float]:
    """Rank 1 for the highest value; ties share the mean of their ranks; None (refused, or
    no such set) ranks after every number."""
    ordered = sorted(values, key=lambda e: (values[e] is None, -(values[e] or 0.0)))
    ranks: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and values[ordered[j + 1]] == values[ordered[i]]:
            j += 1
        for e in ordered[i:j + 1]:
            ranks[e] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def main(argv: list[str] | None = None) -> int:
    """The selection form: a subset of presets and collections, variants, any seeds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--presets", nargs="*", default=list(PRESETS),
                        help="presets to judge (none: only the variants and the baseline)")
    parser.add_argument("--collections", nargs="+", choices=[c.name for c in COLLECTIONS])
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:PRESET:K=V;..",
                        help="a preset with extra overrides, judged beside the presets")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir")
    parser.add_argument("--cache", type=Path, help="keep the collections here")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="robustness-selection", help="OUT/NAME.json")
    args = parser.parse_args(argv)
    variants = {}
    for text in args.variant:
        label, preset, overrides = text.split(":", 2)
        variants[label] = (preset, [o for o in overrides.split(";") if o])
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(name=args.name, out=args.out, quick=args.quick,
                  data_dir=args.data_dir, sets=args.sets)
    started = time.perf_counter()
    headline, rows = robustness(ctx, tuple(args.presets), args.collections, args.seeds,
                                variants, args.cache)
    report = {**headline, "wall_seconds": round(time.perf_counter() - started, 1),
              "command": " ".join(["python -m benchmarks.robustness", *(argv or sys.argv[1:])]),
              "date": datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": machine(), "quick": args.quick, "rows": rows}
    rows = report.pop("rows")
    paths = write_results(args.out, args.name, report, rows)
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

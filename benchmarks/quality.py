"""Detection-quality benchmarks: holdout-4-8, one-class-mnist, one-class-0, noise, contamination.

Every number comes from :func:`reconad.pipeline.run` (metrics.json's shape); where one trained
model serves several scenario variants (the disjoint final set, other noise kinds) its detector
scores those variants' splits and thresholds are again chosen on each variant's dev set.
"""

from __future__ import annotations

import math

from sklearn.metrics import roc_auc_score

from reconad.data import load_dataset
from reconad.pipeline import run
from reconad.scenarios import make_splits

from .common import Context, at, bar_plot, evaluate_detector, mean_std


def _run(ctx: Context, preset: str, overrides: list[str]):
    cfg = ctx.config(preset, overrides)
    return cfg, run(cfg, out_dir=None, progress=False, write=False)


def _summary(rows: list[dict], keys: list[str]) -> dict:
    """``{key: mean, key_std: std}`` over ``rows`` for each key."""
    out = {}
    for key in keys:
        out[key], out[f"{key}_std"] = mean_std([r[key] for r in rows])
    return out


# --------------------------------------------------------------------------- holdout-4-8

HOLDOUT_KEYS = ["dev_auroc", "eval_auroc", "final_precision", "final_recall", "final_f1"]
REFERENCE_SEEDS = 1


def holdout_4_8(ctx: Context) -> tuple[dict, list[dict]]:
    """Protocol 1: ours (preset ``default``) next to the write-up configuration (``holdout-4-8``).

    One training per configuration and seed, in the split_final variant (its training images
    are those of the plain protocol). dev/eval AUROC: the same detector on the plain protocol's
    sets (all 8,044 normal test images + 8s / + 4s). final precision/recall/F1: the run's
    ``final`` set at the threshold chosen (``threshold.method``) on its disjoint dev half.
    """
    rows = []
    for label, preset in (("reconad", "default"), ("write-up reference", "holdout-4-8")):
        # The write-up configuration trains 150 epochs (~30 min here): the first seed of it.
        seeds = ctx.seed_list if preset == "default" else ctx.seed_list[:REFERENCE_SEEDS]
        for seed in seeds:
            cfg, result = _run(ctx, preset, [f"seed={seed}", "scenario.split_final=true"])
            plain = cfg.scenario.model_copy(update={"split_final": False})
            splits = make_splits(load_dataset(cfg.data, seed), plain, seed)
            auroc = {name: float(roc_auc_score(s.is_anomaly, result.detector.anomaly_score(s.x)))
                     for name, s in splits.sets.items()}
            # The same model judged by its reconstruction error alone (the plain AE score).
            recon = {name: float(roc_auc_score(s.is_anomaly,
                                               result.detector.score_parts(s.x)["recon"]))
                     for name, s in splits.sets.items()}
            m, chosen = result.metrics, result.metrics["chosen_threshold"]
            rows.append({
                "config": label, "preset": preset, "seed": seed,
                "dev_auroc": auroc["dev"], "eval_auroc": auroc["eval"],
                "dev_auroc_recon_only": recon["dev"], "eval_auroc_recon_only": recon["eval"],
                "final_precision": at(m["final"], chosen, "precision"),
                "final_recall": at(m["final"], chosen, "recall"),
                "final_f1": at(m["final"], chosen, "f1"),
                "threshold": chosen, "final_max_f1_f1": at(m["final"], "max_f1", "f1"),
                "epochs_run": m["training"]["epochs_run"],
                "train_seconds": m["training"]["train_seconds"],
                "run_seconds": m["wall_seconds"],
            })
    ours = _summary([r for r in rows if r["preset"] == "default"],
                    HOLDOUT_KEYS + ["dev_auroc_recon_only", "eval_auroc_recon_only",
                                    "train_seconds", "run_seconds"])
    ref = _summary([r for r in rows if r["preset"] == "holdout-4-8"], HOLDOUT_KEYS)
    bar_plot(ctx.out / f"{ctx.stem}.png", HOLDOUT_KEYS,
             {"reconad (default)": [ours[k] for k in HOLDOUT_KEYS],
              "write-up config (holdout-4-8)": [ref[k] for k in HOLDOUT_KEYS]},
             "value", "held-out 4/8 (dev: 8s, eval: 4s, final: disjoint normals + 4s)",
             errors={"reconad (default)": [ours[f"{k}_std"] for k in HOLDOUT_KEYS],
                     "write-up config (holdout-4-8)": [ref[f"{k}_std"] for k in HOLDOUT_KEYS]},
             ylim=(0, 1))
    return {**ours, "reference": ref}, rows


# --------------------------------------------------------------------------- one-class


# Reference rows: the preset's own autoencoder judged by its raw error (the plain AE), and one
# member with the relative error (what the ensemble adds).
ONE_CLASS_REFERENCES = {
    "plain AE (one member, raw mse)": ["model.members=1", "score.complexity=none",
                                       "score.kind=mse"],
    "one member, relative L1": ["model.members=1"],
}


def one_class_mnist(ctx: Context, digits: tuple[int, ...] = tuple(range(10)),
                    preset: str = "one-class-mnist") -> tuple[dict, list]:
    """The literature's one-class protocol for every digit: trained on that digit's training
    images (preset ``one-class-mnist`` with ``scenario.normal=[d]``), AUROC on the full test
    set; the :data:`ONE_CLASS_REFERENCES` variants of the preset run alongside.
    ``seconds_per_seed``: reconad's pass over all the digits (the wall time of one seed)."""
    configs = {"reconad": [], **ONE_CLASS_REFERENCES}
    rows = []
    for digit in digits:
        for seed in ctx.seed_list:
            for label, overrides in configs.items():
                _, result = _run(ctx, preset, [f"scenario.normal=[{digit}]", f"seed={seed}",
                                               f"name=one-class-{digit}", *overrides])
                m = result.metrics
                rows.append({"config": label, "digit": digit, "seed": seed,
                             "eval_auroc": m["eval"]["auroc"], "dev_auroc": m["dev"]["auroc"],
                             "epochs_run": m["training"]["epochs_run"],
                             "run_seconds": m["wall_seconds"]})

    results = {label: one_class_summary(rows, label, digits, ctx.seed_list)
               for label in configs}
    low = max(0.0, math.floor(min(v for res in results.values()
                                  for v in res["per_class"].values()) * 10 - 0.5) / 10)
    bar_plot(ctx.out / f"{ctx.stem}.png", [str(d) for d in digits],
             {label: list(res["per_class"].values()) for label, res in results.items()},
             "test AUROC", f"one-class MNIST (reconad mean {results['reconad']['mean_auroc']:.4f})",
             errors={label: list(res["per_class_std"].values()) for label, res in results.items()},
             ylim=(low, 1))
    references = {label: res for label, res in results.items() if label != "reconad"}
    return {**results["reconad"], "reference": references}, rows


def one_class_summary(rows: list[dict], label: str, digits: tuple[int, ...],
                      seeds: list[int]) -> dict:
    """One configuration's headline from the per-digit, per-seed rows of :func:`one_class_mnist`.

    ``mean_auroc``: each seed's mean over the digits, then the mean of those (its std over
    seeds is ``mean_auroc_std_over_seeds``); ``per_class``: each digit's mean over seeds (std in
    ``per_class_std``); ``seconds_per_seed``: the wall time of all digits, per seed.
    """
    mine = [r for r in rows if r["config"] == label]
    per_class = {str(d): mean_std([r["eval_auroc"] for r in mine if r["digit"] == d])
                 for d in digits}
    by_seed = [sum(r["eval_auroc"] for r in mine if r["seed"] == s) / len(digits) for s in seeds]
    mean, std = mean_std(by_seed)
    return {"mean_auroc": mean, "mean_auroc_std_over_seeds": std,
            "per_class": {d: v[0] for d, v in per_class.items()},
            "per_class_std": {d: v[1] for d, v in per_class.items()},
            "seconds_per_seed": sum(r["run_seconds"] for r in mine) / len(seeds)}


def one_class_0(ctx: Context) -> tuple[dict, list[dict]]:
    """Protocol 2 with digit 0 normal (preset ``one-class-0``: with its augmentation)."""
    headline, rows = one_class_mnist(ctx, digits=(0,), preset="one-class-0")
    ours = [r for r in rows if r["config"] == "reconad"]
    return {"auroc": headline["mean_auroc"], "auroc_std": headline["mean_auroc_std_over_seeds"],
            **_summary(ours, ["dev_auroc", "run_seconds"]),
            "reference": {label: {"auroc": ref["mean_auroc"]}
                          for label, ref in headline["reference"].items()}}, rows


# --------------------------------------------------------------------------- noise

NOISES = [(kind, level) for kind in ("gaussian", "salt-pepper") for level in (0.1, 0.2, 0.4)]


def noise(ctx: Context) -> tuple[dict, list[dict]]:
    """Protocol 3: corrupted copies of 10 % of the test images are the anomalies.

    One model per seed (preset ``noise-gaussian``, trained on clean images only, so the same
    model serves every noise); each noise kind/level gets its own splits, and its threshold
    (``threshold.method``) is chosen on its own dev set. Level = sigma for gaussian, the
    fraction of flipped pixels for salt-pepper.
    """
    rows = []
    for seed in ctx.seed_list:
        cfg, result = _run(ctx, "noise-gaussian", [f"seed={seed}"])
        dataset = load_dataset(cfg.data, seed)
        for kind, level in NOISES:
            scenario = cfg.scenario.model_copy(update={"noise": kind, "noise_level": level})
            sets = evaluate_detector(result.detector, make_splits(dataset, scenario, seed),
                                     cfg.threshold)
            ev, method = sets["eval"], cfg.threshold.method
            rows.append({"noise": kind, "level": level, "seed": seed,
                         "eval_auroc": ev["auroc"], "eval_f1": at(ev, method, "f1"),
                         "eval_precision": at(ev, method, "precision"),
                         "eval_recall": at(ev, method, "recall"), "threshold": method,
                         "dev_auroc": sets["dev"]["auroc"],
                         "train_seconds": result.metrics["training"]["train_seconds"]})
    names = [f"{k} {lv:g}" for k, lv in NOISES]
    auroc, f1 = noise_summary(rows, "eval_auroc"), noise_summary(rows, "eval_f1")
    bar_plot(ctx.out / f"{ctx.stem}.png", names,
             {"AUROC": [auroc[n][0] for n in names], "F1": [f1[n][0] for n in names]},
             "eval set", "noise on 10 % of the test images",
             errors={"AUROC": [auroc[n][1] for n in names], "F1": [f1[n][1] for n in names]},
             ylim=(0, 1))
    return {"gaussian_0.2_f1": f1["gaussian 0.2"][0],
            "gaussian_0.2_auroc": auroc["gaussian 0.2"][0],
            "auroc": {n: v[0] for n, v in auroc.items()},
            "f1": {n: v[0] for n, v in f1.items()}}, rows


def noise_summary(rows: list[dict], key: str) -> dict[str, tuple[float | None, float | None]]:
    """``{"gaussian 0.2": (mean, std over seeds), ...}`` of ``key`` for each of :data:`NOISES`."""
    return {f"{k} {lv:g}": mean_std([r[key] for r in rows if (r["noise"], r["level"]) == (k, lv)])
            for k, lv in NOISES}


# --------------------------------------------------------------------------- contamination

# (tag, planted digit, fraction of the pool's 1s): issue 13's rows. Headline keys end in the tag.
CONTAMINATION_CASES = [("1pct", 3, 0.01), ("5pct", 3, 0.05), ("10pct", 3, 0.10),
                       ("7s_1pct", 7, 0.01)]
CONTAMINATION_KEYS = ["planted_precision", "planted_recall", "dev_auroc"]


def contamination(ctx: Context) -> tuple[dict, list[dict]]:
    """Protocol 4: digit 1 with 1 % / 5 % / 10 % of 3s, or 1 % of 7s, planted (preset
    ``contamination-1-3``, the planted digit set by ``scenario.contaminant``).

    The dev set is the unlabelled training pool itself, so the planted images' precision and
    recall are the dev metrics at the quantile threshold, set to the expected contamination
    (``threshold.quantile = 1 - share``, as PyOD's ``contamination`` parameter: the user
    says how many odd ones to expect, never which), and robust training leaves the same
    share out of each epoch (``train.trim = share``). ``share = fraction / (1 + fraction)``
    is the planted images' share of the pool (``scenario.contamination`` counts them against
    the normals: at 10 % a ``1 - fraction`` quantile would flag 748 images for 674 planted
    ones, capping precision at 0.90); ``dev_auroc`` is the AUROC over
    the pool; max-F1 (chosen with the hidden labels) is reported next to it as what the best
    threshold could do. Headline keys: ``{key}_{tag}`` per case of
    :data:`CONTAMINATION_CASES` (``planted_precision_1pct``, ..., ``dev_auroc_7s_1pct``).
    """
    rows = []
    for tag, digit, fraction in CONTAMINATION_CASES:
        share = fraction / (1 + fraction)  # the planted images' share of the pool
        for seed in ctx.seed_list:
            _, result = _run(ctx, "contamination-1-3",
                             [f"scenario.contaminant=[{digit}]",
                              f"scenario.contamination={fraction}", f"seed={seed}",
                              f"threshold.quantile={1 - share:.6g}", f"train.trim={share:.6g}"])
            m = result.metrics
            dev, chosen = m["dev"], m["chosen_threshold"]
            rows.append({"case": tag, "planted_digit": digit, "contamination": fraction,
                         "seed": seed, "n_planted": dev["n_anomaly"],
                         "planted_precision": at(dev, chosen, "precision"),
                         "planted_recall": at(dev, chosen, "recall"), "threshold": chosen,
                         "max_f1_precision": at(dev, "max_f1", "precision"),
                         "max_f1_recall": at(dev, "max_f1", "recall"),
                         "dev_auroc": dev["auroc"], "run_seconds": m["wall_seconds"]})
    headline = contamination_summary(rows)
    keys = CONTAMINATION_KEYS[:2] + ["max_f1_precision", "max_f1_recall", "dev_auroc"]
    bar_plot(ctx.out / f"{ctx.stem}.png", keys,
             {f"{f:.0%} {d}s": [mean_std([r[k] for r in rows if r["case"] == tag])[0]
                                for k in keys] for tag, d, f in CONTAMINATION_CASES},
             "dev (= training pool)", "digit 1 with planted 3s or 7s", ylim=(0, 1))
    return headline, rows


def contamination_summary(rows: list[dict]) -> dict:
    """The headline of :func:`contamination`: ``{key}_{tag}`` = the mean over seeds of each of
    :data:`CONTAMINATION_KEYS` per case, and ``run_seconds`` = the mean over every run."""
    headline = {}
    for tag, _, _ in CONTAMINATION_CASES:
        part = [r for r in rows if r["case"] == tag]
        for key in CONTAMINATION_KEYS:
            headline[f"{key}_{tag}"] = mean_std([r[key] for r in part])[0]
    headline["run_seconds"] = mean_std([r["run_seconds"] for r in rows])[0]
    return headline

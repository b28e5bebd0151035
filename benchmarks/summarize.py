"""Write the generated part of RESULTS.md from benchmarks/results/NAME.json.

    python benchmarks/summarize.py

Everything above the ``<!-- notes -->`` line of RESULTS.md is rewritten (targets against the
measured numbers, and the date, machine, command and wall time of each run); the hand-written
notes below it are kept. A benchmark without a results file shows as "not run".
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS, OUT = HERE / "results", HERE / "RESULTS.md"
MARKER = "<!-- notes -->"
ORDER = ["holdout-4-8", "one-class-mnist", "one-class-0", "noise", "contamination", "peers",
         "speed", "scale", "fuzz", "defects", "robustness", "robustness-digits-8x8", "serve",
         "real-defects"]
DEFECTS_ROW = "top 1% SSIM + squared + colour-statistics map (defects-ssim)"  # defects.RECIPE_ROW


def _get(data: dict, path: str):
    """``data["a"]["b"]`` for ``"a/b"``, or None."""
    path, _, reduce = path.partition("|")
    for key in path.split("/"):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    if reduce == "min":  # the smallest value of a dict ("per_class|min": the worst class)
        return min(data.values()) if isinstance(data, dict) and data else None
    if reduce.startswith("collections_of:"):  # "below_knn|collections_of:default": how many
        entry = reduce.split(":", 1)[1]       # collections list that entry
        return len({row["collection"] for row in data if row["entry"] == entry})
    return data


# (benchmark, what, JSON path, target text, test of the measured value, format)
TARGETS = [
    # issue 13 (the bar moved from issue 5's 0.990 / 0.960 / 0.75 / 180 s / 0.985)
    ("holdout-4-8", "dev AUROC (8s)", "dev_auroc", "≥ 0.993", lambda v: v >= 0.993, "{:.4f}"),
    ("holdout-4-8", "eval AUROC (4s)", "eval_auroc", "≥ 0.975", lambda v: v >= 0.975, "{:.4f}"),
    ("holdout-4-8", "final-set F1 at the dev-chosen threshold", "final_f1", "≥ 0.80",
     lambda v: v >= 0.80, "{:.3f}"),
    ("holdout-4-8", "`default` preset wall time (s), whole run", "run_seconds", "≤ 90",
     lambda v: v <= 90, "{:.0f}"),
    ("one-class-0", "AUROC (full test set)", "auroc", "≥ 0.9995", lambda v: v >= 0.9995,
     "{:.4f}"),
    ("one-class-mnist", "mean AUROC of the 10 digits", "mean_auroc", "≥ 0.995",
     lambda v: v >= 0.995, "{:.4f}"),
    ("one-class-mnist", "worst digit's AUROC", "per_class|min", "≥ 0.990",
     lambda v: v >= 0.990, "{:.4f}"),
    ("one-class-mnist", "wall time, all 10 digits once (s)", "seconds_per_seed", "≤ 900",
     lambda v: v <= 900, "{:.0f}"),
    ("noise", "Gaussian σ 0.2 on 10 % of test: F1", "gaussian_0.2_f1", "≥ 0.995",
     lambda v: v >= 0.995, "{:.4f}"),
    ("contamination", "1 % planted: precision", "planted_precision_1pct", "≥ 0.95",
     lambda v: v >= 0.95, "{:.3f}"),
    ("contamination", "1 % planted: recall", "planted_recall_1pct", "≥ 0.95",
     lambda v: v >= 0.95, "{:.3f}"),
    *[row for tag, what in (("5pct", "5 % 3s"), ("10pct", "10 % 3s"), ("7s_1pct", "1 % 7s"))
      for row in (
          ("contamination", f"{what} planted: AUROC over the pool", f"dev_auroc_{tag}",
           "≥ 0.99", lambda v: v >= 0.99, "{:.4f}"),
          ("contamination", f"{what} planted: precision", f"planted_precision_{tag}", "≥ 0.90",
           lambda v: v >= 0.90, "{:.3f}"),
          ("contamination", f"{what} planted: recall", f"planted_recall_{tag}", "≥ 0.90",
           lambda v: v >= 0.90, "{:.3f}"))],
    ("peers", "reconad fast: dev AUROC", "dev_auroc/reconad fast (1 epoch)", "≥ 0.95",
     lambda v: v >= 0.95, "{:.4f}"),
    ("peers", "reconad fast fit time / PyOD AutoEncoder fit time", "fast_fit_time_over_pyod_ae",
     "≤ 0.25", lambda v: v <= 0.25, "{:.3f}"),
    ("peers", "same-architecture epoch time / PyOD AutoEncoder's",
     "plain_ae_epoch_time_over_pyod_ae", "≤ 1", lambda v: v <= 1.0, "{:.3f}"),
    ("speed", "dense AE at batch 256: fraction of fp32 matmul peak", "dense_b256_fraction_of_peak",
     "≥ 0.8", lambda v: v >= 0.8, "{:.3f}"),
    ("speed", "conv AE (noise-gaussian), best batch: fraction of fp32 matmul peak",
     "conv_best_fraction_of_peak", "≥ 0.4", lambda v: v >= 0.4, "{:.3f}"),
    ("speed", "conv AE (conv-rgb, 128x128), best batch: fraction of peak",
     "conv-rgb_best_fraction_of_peak", "≥ 0.4", lambda v: v >= 0.4, "{:.3f}"),
    # issue 10: memory and speed at scale (benchmarks/run.py scale)
    ("scale", "`reconad score`, 60k images from .npy (s)", "score_seconds",
     "≤ 2 x bare forward + 5 s", None, "{:.1f}"),
    ("scale", "dense AE inside the scoring loop (images/s)", "dense_loop_images_per_s",
     "≥ 50000", lambda v: v >= 50000, "{:.0f}"),
    ("scale", "conv AE inside the scoring loop (images/s)", "conv_loop_images_per_s",
     "≥ 10000", lambda v: v >= 10000, "{:.0f}"),
    ("scale", "`reconad score` peak RSS, 60k images (MiB)", "score_peak_rss_mib", "≤ 600",
     lambda v: v <= 600, "{:.0f}"),
    ("scale", "peak RSS, 600k images / 60k (memory-mapped .npy)", "rss_ratio_10x", "≤ 1.2",
     lambda v: v <= 1.2, "{:.3f}"),
    ("scale", "peak RSS, 100k PNGs / 10k PNGs", "png_rss_ratio_10x", "≤ 1.2",
     lambda v: v <= 1.2, "{:.3f}"),
    ("scale", "`reconad run default` peak RSS (MiB)", "run_default_peak_rss_mib", "≤ 1024",
     lambda v: v <= 1024, "{:.0f}"),
    ("scale", "`reconad run default`: seconds outside training",
     "run_default_seconds_outside_training", "≤ 10", lambda v: v <= 10, "{:.1f}"),
    ("scale", "Ray: 1 worker's time / 2 workers' time", "ray_2_over_1_speedup", "—",
     lambda v: True, "{:.2f}"),
    ("scale", "Ray scores vs `reconad score`: largest relative difference",
     "ray_max_rel_diff_vs_score", "≤ 1e-4", lambda v: v <= 1e-4, "{:.1e}"),
    ("scale", "streamed / in-memory training: epoch time", "streamed_over_in_memory_epoch",
     "≤ 1.3", lambda v: v <= 1.3, "{:.3f}"),
    ("scale", "streamed vs in-memory training: dev AUROC difference",
     "streamed_dev_auroc_difference", "≤ 0.002", lambda v: v <= 0.002, "{:.4f}"),
    # issue 11: every input parser fuzzed (benchmarks/run.py fuzz)
    ("fuzz", "inputs per parser", "examples_per_parser", "≥ 10000", lambda v: v >= 10000,
     "{:.0f}"),
    ("fuzz", "inputs run, all parsers", "examples_run", "—", lambda v: True, "{:.0f}"),
    ("fuzz", "exceptions escaped (not a one-line error, not a result)", "escaped", "= 0",
     lambda v: v == 0, "{:.0f}"),
    # issue 14 in the product: the defects-ssim preset (benchmarks/run.py defects)
    ("defects", "`defects-ssim` image AUROC, mean of 3 textures", f"image_auroc/{DEFECTS_ROW}",
     "≥ 0.95", lambda v: v >= 0.95, "{:.3f}"),
    ("defects", "`defects-ssim` pixel AUROC, mean of 3 textures", f"pixel_auroc/{DEFECTS_ROW}",
     "≥ 0.95", lambda v: v >= 0.95, "{:.3f}"),
    ("defects", "`defects-ssim` PRO (FPR ≤ 0.3), mean of 3 textures", f"pro/{DEFECTS_ROW}",
     "≥ 0.85", lambda v: v >= 0.85, "{:.3f}"),
    # issue 21: the exported graph in onnxruntime beside torch (benchmarks/run.py speed)
    ("speed", "`default` detector: onnxruntime images/s / torch images/s",
     "default_onnx_over_torch",
     "—", lambda v: True, "{:.2f}"),
    ("speed", "`default` detector: largest relative score difference, ONNX vs torch",
     "default_onnx_max_rel_diff", "≤ 1e-4", lambda v: v <= 1e-4, "{:.1e}"),
    ("speed", "`defects-ssim` detector: largest relative score difference, ONNX vs torch",
     "defects-ssim_onnx_max_rel_diff", "≤ 1e-4", lambda v: v <= 1e-4, "{:.1e}"),
    # issue 19: the defects preset on real photographs (benchmarks/run.py real-defects)
    ("real-defects", "`defects` on mtd-dev: image AUROC, mean of the seeds",
     "image_auroc/defects", "≥ 0.90", lambda v: v >= 0.90, "{:.3f}"),
    ("real-defects", "`defects` on mtd-dev: pixel AUROC, mean of the seeds",
     "pixel_auroc/defects", "≥ 0.90", lambda v: v >= 0.90, "{:.3f}"),
    ("real-defects", "`defects` on mtd-dev: PRO (FPR ≤ 0.3), mean of the seeds",
     "pro/defects", "≥ 0.80", lambda v: v >= 0.80, "{:.3f}"),
    ("real-defects", "`defects` peak RSS of a run (MiB)", "peak_rss_mib/defects", "≤ 2048",
     lambda v: v <= 2048, "{:.0f}"),
    # issue 21: reconad serve under 32 clients (benchmarks/run.py serve)
    ("serve", "wrong or failed answers, batching on and off", "errors", "= 0",
     lambda v: v == 0, "{:.0f}"),
    ("serve", "images/s with batching (32 clients, 1-4 images per request)", "images_per_s",
     "—", lambda v: True, "{:.1f}"),
    ("serve", "images/s with batching / without", "batching_speedup", "> 1",
     lambda v: v > 1, "{:.2f}"),
    ("serve", "server peak RSS, last 10 s / first 10 s of the load", "rss_last_over_first",
     "≤ 1.05", lambda v: v <= 1.05, "{:.3f}"),
    # issue 20: presets on other sources and sizes (benchmarks/run.py robustness)
    ("robustness-digits-8x8", "`default` on scikit-learn's 8x8 digits, seeds 0-2: dev AUROC",
     "target/measured_dev", "≥ 0.95", lambda v: v >= 0.95, "{:.4f}"),
    ("robustness-digits-8x8", "`default` on scikit-learn's 8x8 digits, seeds 0-2: eval AUROC",
     "target/measured_eval", "≥ 0.93", lambda v: v >= 0.93, "{:.4f}"),
    ("robustness", "collections where `default` is below the pixel-kNN baseline (dev or eval)",
     "below_knn|collections_of:default", "= 0", lambda v: v == 0, "{:.0f}"),
]


def generated(results: dict[str, dict]) -> str:
    lines = ["# Benchmark results", "",
             "Generated by `python benchmarks/summarize.py` from `benchmarks/results/*.json`;",
             "each number is reproducible with the command listed for its benchmark.", "",
             "## Targets (issues 5, 10, 11, 13, 14, 19, 20, 21)", "",
             "| benchmark | metric | target | measured | met |", "|---|---|---|---|---|"]
    for name, what, path, target, ok, fmt in TARGETS:
        data = results.get(name, {})
        value = _get(data, path)
        shown = "not run" if value is None else fmt.format(value)
        if ok is None and value is not None:  # a target that depends on another measurement
            budget = _get(data, "score_budget_seconds")
            ok = lambda v, b=budget: b is not None and v <= b  # noqa: E731
            shown += f" (budget {budget:.1f})" if budget is not None else ""
        met = "" if value is None else ("yes" if ok(value) else "**no**")
        lines.append(f"| {name} | {what} | {target} | {shown} | {met} |")
    lines += ["", "## Runs", "", "| benchmark | command | date | machine | seeds | wall |",
              "|---|---|---|---|---|---|"]
    for name in ORDER:
        data = results.get(name)
        if data is None:
            lines.append(f"| {name} | not run | | | | |")
            continue
        if "machine" not in data:  # written by a script of its own, not benchmarks/run.py
            lines.append(f"| {name} | not run by benchmarks/run.py | | | | |")
            continue
        m = data["machine"]
        lines.append(f"| [{name}](results/{name}.md) | `{data['command']}` | {data['date']} | "
                     f"{m['cores']} cores, {m['cpu']}, torch {m['torch']} | {data['seeds']} | "
                     f"{data['wall_seconds']:.0f} s |")
    return "\n".join(lines) + "\n\n"


def main() -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    results = {k: v for k, v in results.items() if not v.get("quick")}
    notes = OUT.read_text().split(MARKER, 1)[1] if OUT.is_file() and MARKER in OUT.read_text() \
        else "\n"
    OUT.write_text(generated(results) + MARKER + notes)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

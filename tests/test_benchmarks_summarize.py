"""The benchmark code that turns runs into numbers: means and stds over seeds, per-class and
per-texture averaging, selection seeds, and the generated tables of RESULTS.md and README.md.
Every expected value is computed by hand from small made-up results; nothing is trained."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import defects, quality, run, summarize
from benchmarks.common import Context, mean_std

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- statistics


def test_mean_std_is_the_mean_and_sample_std_leaving_out_unknown_values():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std: sqrt((1 + 0 + 1) / 2)
    mean, std = mean_std([0.5, None, 0.7, float("nan")])
    assert mean == pytest.approx(0.6) and std == pytest.approx(math.sqrt(0.02))
    assert mean_std([4.0]) == (4.0, None)  # one seed: no spread to report
    assert mean_std([None, float("nan")]) == (None, None)


def test_summary_gives_each_key_its_mean_and_std():
    rows = [{"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}]
    assert quality._summary(rows, ["a", "b"]) == {
        "a": 2.0, "a_std": pytest.approx(math.sqrt(2)), "b": 2.0, "b_std": None}


def test_one_class_mean_is_the_mean_over_seeds_of_each_seeds_mean_over_digits():
    aurocs = {(100, 0): 0.90, (100, 1): 0.70, (101, 0): 0.96, (101, 1): 0.80}
    rows = [{"config": "reconad", "digit": d, "seed": s, "eval_auroc": v, "run_seconds": 10.0}
            for (s, d), v in aurocs.items()]
    rows += [{"config": "other", "digit": 0, "seed": 100, "eval_auroc": 0.1, "run_seconds": 99}]
    got = quality.one_class_summary(rows, "reconad", (0, 1), [100, 101])
    # seed 100: (0.90 + 0.70) / 2 = 0.80; seed 101: (0.96 + 0.80) / 2 = 0.88
    assert got["mean_auroc"] == pytest.approx(0.84)
    assert got["mean_auroc_std_over_seeds"] == pytest.approx(math.sqrt(2 * 0.04**2))
    assert got["per_class"] == {"0": pytest.approx(0.93), "1": pytest.approx(0.75)}
    assert got["per_class_std"] == {"0": pytest.approx(math.sqrt(2 * 0.03**2)),
                                    "1": pytest.approx(math.sqrt(2 * 0.05**2))}
    assert got["seconds_per_seed"] == 20.0  # 4 runs of 10 s over 2 seeds; "other" not counted


def test_noise_summary_averages_each_noise_over_seeds():
    rows = [{"noise": "gaussian", "level": 0.2, "seed": s, "eval_f1": f}
            for s, f in ((0, 0.9), (1, 1.0))]
    rows += [{"noise": "gaussian", "level": 0.4, "seed": 0, "eval_f1": 0.5}]
    got = quality.noise_summary(rows, "eval_f1")
    assert got["gaussian 0.2"] == (pytest.approx(0.95), pytest.approx(math.sqrt(0.005)))
    assert got["gaussian 0.4"] == (0.5, None)
    assert got["salt-pepper 0.1"] == (None, None)  # not run
    assert len(got) == len(quality.NOISES)


def test_contamination_summary_averages_each_case_over_seeds():
    rows = [{"case": "1pct", "planted_precision": p, "planted_recall": r, "dev_auroc": a,
             "run_seconds": t} for p, r, a, t in ((0.8, 0.7, 0.99, 10), (0.9, 0.8, 0.97, 20))]
    rows += [{"case": "5pct", "planted_precision": 0.5, "planted_recall": 0.6, "dev_auroc": 0.9,
              "run_seconds": 60}]
    got = quality.contamination_summary(rows)
    assert got["planted_precision_1pct"] == pytest.approx(0.85)
    assert got["planted_recall_1pct"] == pytest.approx(0.75)
    assert got["dev_auroc_1pct"] == pytest.approx(0.98)
    assert got["planted_precision_5pct"] == 0.5
    assert got["dev_auroc_10pct"] is None and got["planted_recall_7s_1pct"] is None
    assert got["run_seconds"] == 30.0  # (10 + 20 + 60) / 3 runs


def test_defects_averages_seeds_within_a_texture_before_averaging_textures():
    row = "recipe"
    rows = [{"image_score": row, "texture": "brick", "image_auroc": 0.8, "pixel_auroc": 0.9,
             "pro": 0.7, "seconds": 10.0},
            {"image_score": row, "texture": "brick", "image_auroc": 1.0, "pixel_auroc": None,
             "pro": 0.9, "seconds": 20.0},
            {"image_score": row, "texture": "grass", "image_auroc": 0.6, "pixel_auroc": 0.5,
             "pro": 0.5, "seconds": 30.0},
            {"image_score": "knn", "texture": "brick", "image_auroc": 0.55, "pixel_auroc": 0.6,
             "pro": 0.4, "seconds": 1.0}]
    got = defects.summary(rows, ("brick", "grass"))
    # brick: (0.8 + 1.0) / 2 = 0.9, grass 0.6 -> 0.75 (not (0.8 + 1.0 + 0.6) / 3 = 0.8)
    assert got["image_auroc"] == {row: pytest.approx(0.75), "knn": 0.55}
    assert got["pixel_auroc"][row] == pytest.approx(0.7)  # brick 0.9 (None left out), grass 0.5
    assert got["pro"][row] == pytest.approx((0.8 + 0.5) / 2)
    assert got["per_texture"][row]["brick"] == {
        "image_auroc": pytest.approx(0.9), "pixel_auroc": 0.9, "pro": pytest.approx(0.8),
        "seconds": 15.0}
    assert got["per_texture"]["knn"]["grass"]["image_auroc"] is None  # no grass row


# --------------------------------------------------------------------------- seeds


def test_context_seed_list_starts_at_seed_start(tmp_path):
    assert Context("noise", tmp_path, seeds=3).seed_list == [0, 1, 2]
    selection = Context("noise", tmp_path, seeds=3, seed_start=100)
    assert selection.seed_list == [100, 101, 102] and selection.stem == "noise-selection"
    assert Context("noise", tmp_path).stem == "noise"


def test_selection_seeds_write_their_own_files_and_record_the_seeds(tmp_path, monkeypatch):
    seen = []

    def fake(ctx):
        seen.append(ctx.seed_list)
        return {"auroc": 0.5}, [{"seed": s} for s in ctx.seed_list]

    monkeypatch.setitem(run.BENCHMARKS, "noise", fake)
    assert run.main(["noise", "--seeds", "3", "--seed-start", "100", "--out", str(tmp_path)]) == 0
    assert run.main(["noise", "--seeds", "2", "--out", str(tmp_path)]) == 0
    assert seen == [[100, 101, 102], [0, 1]]
    selection = json.loads((tmp_path / "noise-selection.json").read_text())
    reported = json.loads((tmp_path / "noise.json").read_text())
    assert selection["seed_list"] == [100, 101, 102] and selection["seeds"] == 3
    assert reported["seed_list"] == [0, 1]
    # selection runs are never shown as the reported numbers
    assert set(summarize.load_results(tmp_path)) == {"noise"}


@pytest.mark.parametrize("argv", [["--seed-start", "-1"], ["--set", "seed=100"],
                                  ["--set", " seed = 3"], ["--seeds", "0"]])
def test_bad_seed_arguments_are_refused(argv, tmp_path):
    with pytest.raises(SystemExit) as info:
        run.main(["noise", "--out", str(tmp_path), *argv])
    assert info.value.code == 2
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- summarize


def test_seed_text_and_seeds_of_files_written_before_seed_lists():
    assert summarize.seed_text([0, 1, 2]) == "0–2"
    assert summarize.seed_text([100, 101, 102, 103]) == "100–103"
    assert summarize.seed_text([0, 1]) == "0, 1" and summarize.seed_text([0, 2, 4]) == "0, 2, 4"
    assert summarize.seeds_of({"seeds": 3}) == [0, 1, 2]  # before seed_list: run.py ran 0..N-1
    assert summarize.seeds_of({"seeds": 3, "seed_list": [7, 8, 9]}) == [7, 8, 9]


MACHINE = {"cores": 2, "cpu": "Test CPU", "torch": "2.13.0+cpu"}


def _holdout(**headline) -> dict:
    rows = [{"preset": "default", "seed": s} for s in (0, 1, 2)]
    rows.append({"preset": "holdout-4-8", "seed": 0})
    return {"dev_auroc": 0.99412, "dev_auroc_std": 0.00061, "eval_auroc": 0.95,
            "eval_auroc_std": 0.002, "final_f1": 0.8125, "final_f1_std": None,
            "run_seconds": 61.6, "run_seconds_std": 4.44,
            "reference": {"dev_auroc": 0.96912, "eval_auroc": 0.8701, "final_f1": 0.55},
            "date": "2026-12-01T10:00:00+00:00", "command": "python benchmarks/run.py x",
            "machine": MACHINE, "wall_seconds": 100.4, "quick": False, "seeds": 3,
            "seed_list": [0, 1, 2], "rows": rows, **headline}


SCALE_STALE = summarize.Stale(
    "scale", ("score_", "ray_"), "2026-11-30T04:39:29+00:00",
    "`reconad score` ran the `default` detector before it scored 9 test-time copies per image")


@pytest.fixture
def fake_results(tmp_path, monkeypatch) -> Path:
    """A results folder: holdout-4-8, a fuzz run, a scale run, and two files never shown; a
    stale-mark rule for scale beside the shipped ones (the fuzz rule)."""
    monkeypatch.setattr(summarize, "STALE", [*summarize.STALE, SCALE_STALE])
    folder = tmp_path / "results"
    folder.mkdir()
    files = {
        "holdout-4-8": _holdout(),
        # both measured before a change that summarize.STALE lists
        "fuzz": {"examples_per_parser": 10000, "examples_run": 70000, "escaped": 0,
                 "date": "2026-11-29T00:00:00+00:00", "seeds": 1, "quick": False},
        "scale": {"score_seconds": 7.0, "score_budget_seconds": 7.66,
                  "ray_2_over_1_speedup": 1.5, "date": "2026-11-29T12:00:00+00:00"},
        "holdout-4-8-selection": _holdout(dev_auroc=0.5, seed_list=[100, 101, 102]),
        "speed-quick": {"dense_b256_fraction_of_peak": 0.9, "quick": True},
    }
    for name, data in files.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
    return folder


def test_results_table_against_hand_written_lines(fake_results):
    results = summarize.load_results(fake_results)
    assert set(results) == {"holdout-4-8", "fuzz", "scale"}
    lines = summarize.generated(results).splitlines()
    for line in [
        "| holdout-4-8 | dev AUROC (8s) | ≥ 0.993 | 0.9941 | yes |",
        "| holdout-4-8 | eval AUROC (4s) | ≥ 0.975 | 0.9500 | **no** |",
        "| holdout-4-8 | final-set F1 at the dev-chosen threshold | ≥ 0.80 | 0.812 | yes |",
        "| one-class-0 | AUROC (full test set) | ≥ 0.9995 | not run | |",
        "| scale | `reconad score`, 60k images from .npy (s) | ≤ 2 x bare forward + 5 s = 7.7 | "
        "7.0 (stale, re-run pending) | yes |",
        # measured without a target: "—" in met, never "yes"
        "| scale | Ray: 1 worker's time / 2 workers' time | — | 1.50 (stale, re-run pending) | — |",
        "| fuzz | inputs run, all parsers | — | 70000 | — |",
        "| fuzz | exceptions escaped (not a one-line error, not a result) | = 0 | "
        "0 (stale, re-run pending) | yes |",
        "| [holdout-4-8](results/holdout-4-8.md) | `python benchmarks/run.py x` | "
        "2026-12-01T10:00:00+00:00 | 2 cores, Test CPU, torch 2.13.0+cpu | 0–2 | 100 s |",
        "| fuzz | not run by benchmarks/run.py | | | | |",
        "| noise | not run | | | | |",
    ]:
        assert line in lines, line
    assert not any("| yes |" in line and "| — |" in line for line in lines)


def test_readme_rows_against_hand_written_lines(fake_results):
    results = summarize.load_results(fake_results)
    table = summarize.readme_table(results).splitlines()
    for line in [
        "| held-out 4/8 (`default`): dev AUROC (8s) | 0.9941 ± 0.0006 | 0.969 (write-ups' "
        "150-epoch AE, same run, seed 0) | ≥ 0.993 | ✓ | 2026-12-01 | 0–2 |",
        "| held-out 4/8: eval AUROC (4s) | 0.9500 ± 0.0020 | 0.870 (write-ups' AE, same run, "
        "seed 0) | ≥ 0.975 | ✗ | 2026-12-01 | 0–2 |",
        "| held-out 4/8: final-set F1 at the dev-chosen threshold | 0.812 | 0.550 (write-ups' AE, "
        "same run, seed 0); 0.374 (grid-searched write-up, published) | ≥ 0.80 | ✓ | "
        "2026-12-01 | 0–2 |",
        "| `default` preset, whole run | 62 ± 4 s | \"up to 40 minutes\" (write-ups) | ≤ 90 s | ✓ "
        "| 2026-12-01 | 0–2 |",
        # a benchmark without a results file
        "| one-class 0 AUROC (full test set) | not run | — | — | — | — | — |",
        # parts without a value or a target; a stale part marks the row
        "| `reconad score`, 60,000 images (`.npy`): time / peak RSS; 600,000 images: peak RSS / "
        "its ratio to 60,000's | 7.0 s / missing / missing / missing (stale, re-run pending) | — "
        "| ≤ 2 x bare forward + 5 s = 7.7 s / ≤ 600 MiB / — / ≤ 1.2 | ✓ / — / — / — | "
        "2026-11-29 | — |",
    ]:
        assert line in table, line
    assert table[0] == summarize.README_START and table[-1] == summarize.README_END
    assert "- scale (measured 2026-11-29 12:00 UTC, before 2026-11-30 04:39 UTC): `reconad " \
        "score`" in "\n".join(table)
    assert "- fuzz" not in "\n".join(table)  # no README row reads fuzz


def test_a_run_after_the_change_clears_the_stale_mark():
    before = {"escaped": 1, "date": "2026-11-30T00:17:11+00:00"}
    after = {"escaped": 0, "date": "2026-11-30T00:30:00+00:00"}
    assert summarize.stale("fuzz", "escaped", before) is not None
    assert summarize.stale("fuzz", "escaped", after) is None
    assert summarize.stale("fuzz", "examples_run", before) is None  # not a stale number
    lines = summarize.generated({"fuzz": after}).splitlines()
    assert "| fuzz | exceptions escaped (not a one-line error, not a result) | = 0 | 0 | yes |" \
        in lines
    assert summarize.STALE_HEADING not in lines


def test_contamination_row_takes_its_std_from_the_per_seed_rows():
    rows = [{"case": "1pct", "seed": s, "dev_auroc": a, "planted_precision": p,
             "planted_recall": r} for s, a, p, r in ((0, 0.999, 0.80, 0.70), (1, 0.997, 0.90,
                                                                              0.80))]
    data = {"dev_auroc_1pct": 0.998, "planted_precision_1pct": 0.85, "planted_recall_1pct": 0.75,
            "date": "2026-12-01T00:00:00", "seeds": 2, "rows": rows}
    row = next(r for r in summarize.README_ROWS if r.what.startswith("contamination 1 % (3s"))
    assert summarize.readme_row(row, data) == (
        f"| {row.what} | 0.9980 ± 0.0014 / 0.850 ± 0.071 / 0.750 ± 0.071 | not reported | "
        "— / ≥ 0.95 / ≥ 0.95 | — / ✗ / ✗ | 2026-12-01 | 0, 1 |")


def test_a_nonzero_std_too_small_for_the_format_is_not_shown_as_zero():
    part = summarize.Part("auroc", std="auroc_std")
    assert part.shown({"auroc": 0.99962, "auroc_std": 4.5e-5}) == "0.9996 ± < 0.0001"
    assert part.shown({"auroc": 1.0, "auroc_std": 0.0}) == "1.0000 ± 0.0000"


def test_readme_generation_keeps_the_rest_and_is_idempotent(fake_results):
    results = summarize.load_results(fake_results)
    start, end = summarize.README_START, summarize.README_END
    text = f"# title\n\nbefore\n{start}\nold table\n{end}\nafter\n"
    once = summarize.readme(text, results)
    assert once.startswith("# title\n\nbefore\n" + summarize.README_START)
    assert once.endswith(summarize.README_END + "\nafter\n") and "old table" not in once
    assert summarize.readme(once, results) == once
    with pytest.raises(SystemExit, match="lacks"):
        summarize.readme("# no markers\n", results)


def test_results_md_keeps_the_hand_written_notes(fake_results):
    results = summarize.load_results(fake_results)
    text = f"# old\n{summarize.MARKER}\n\nNotes written by hand.\n"
    once = summarize.results_md(text, results)
    assert once.endswith(f"{summarize.MARKER}\n\nNotes written by hand.\n")
    assert summarize.results_md(once, results) == once


def test_every_readme_row_and_target_reads_a_known_benchmark():
    known = set(summarize.ORDER)
    assert {row.benchmark for row in summarize.README_ROWS} <= known
    assert {t.benchmark for t in summarize.TARGETS} <= known
    assert {s.benchmark for s in summarize.STALE} <= known
    assert len(summarize.TARGET_OF) == len(summarize.TARGETS)  # one target per number


def test_committed_readme_and_results_are_what_summarize_writes():
    """The README's table and RESULTS.md cannot drift from benchmarks/results/*.json: after a
    benchmark run or an edit of summarize.py, run `python benchmarks/summarize.py`."""
    results = summarize.load_results()
    readme = (ROOT / "README.md").read_text()
    assert summarize.readme(readme, results) == readme
    notes = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert summarize.results_md(notes, results) == notes
    assert summarize.main(["--check"]) == 0

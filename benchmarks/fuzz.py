"""Fuzz every input parser with 10,000 random inputs each and count what escaped.

    python benchmarks/run.py fuzz [--quick]      (or: python benchmarks/fuzz.py [--quick])

The targets and the property (a correct result or a one-line ReconadError, nothing else) are
those of tests/test_fuzz.py, from tests/fuzz_targets.py; CI runs a few hundred examples per
parser, this runs 10,000 (``--quick``: 200) with fresh random seeds and, instead of stopping
at the first failure, counts the examples run and the exceptions that escaped, keeping the
first few of each kind. Writes fuzz.json, fuzz.csv and fuzz.md.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from .common import Context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

EXAMPLES, QUICK_EXAMPLES = 10_000, 200
SHOWN = 3  # failing inputs kept per exception kind


def fuzz_target(name: str, examples: int) -> dict:
    """Run ``examples`` inputs through target ``name``; one row of counts."""
    from fuzz_targets import TARGETS, run_check
    from hypothesis import HealthCheck, Phase, given, settings

    target = TARGETS[name]
    counts: Counter = Counter()
    escaped: dict[str, list[str]] = {}

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(target.inputs)
    def run_one(example):
        counts["examples"] += 1
        try:
            run_check(target, example)
        except Exception as exc:  # the property failed: record it and go on
            kind = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
            counts["escaped"] += 1
            shown = escaped.setdefault(kind.split(":")[0], [])
            if len(shown) < SHOWN:
                shown.append(f"{kind} <- {repr(example)[:300]}")

    started = time.perf_counter()
    run_one()
    return {"parser": name, "examples": counts["examples"], "escaped": counts["escaped"],
            "seconds": round(time.perf_counter() - started, 1),
            "escaped_kinds": "; ".join(sorted(escaped)) or "",
            "escaped_examples": " | ".join(e for shown in escaped.values() for e in shown)}


def fuzz(ctx: Context) -> tuple[dict, list[dict]]:
    """The benchmark: every target, ``EXAMPLES`` inputs each (``QUICK_EXAMPLES`` if quick)."""
    from fuzz_targets import TARGETS

    examples = QUICK_EXAMPLES if ctx.quick else EXAMPLES
    rows = []
    for name in TARGETS:
        rows.append(fuzz_target(name, examples))
        print(f"{name}: {rows[-1]['examples']} examples, {rows[-1]['escaped']} escaped",
              file=sys.stderr)
    headline = {"examples_per_parser": examples,
                "examples_run": sum(r["examples"] for r in rows),
                "escaped": sum(r["escaped"] for r in rows),
                "escaped_by_parser": {r["parser"]: r["escaped"] for r in rows}}
    return headline, rows


if __name__ == "__main__":
    import run

    sys.exit(run.main(["fuzz", *sys.argv[1:]]))

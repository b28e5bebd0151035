"""Run one named benchmark and write NAME.json, NAME.csv, NAME.md (and NAME.png).

    python benchmarks/run.py NAME [--quick] [--seeds N] [--seed-start S] [--data-dir DIR]
                                  [--out DIR] [--set section.key=value ...] [--workers N]
    python -m benchmarks.run NAME ...          (the same, from the repository root)

Full runs write to benchmarks/results/ (committed). ``--quick`` runs a tiny budget for trying a
benchmark out and writes to a fresh temporary folder (or ``--out``), never to the committed
results. ``--seed-start S`` runs the selection seeds S..S+N-1 that settings are chosen on; their
files are named NAME-selection.*, so they never overwrite the reported NAME.* (seeds from 0).
See benchmarks/README.md for what each benchmark measures.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

if not __package__:  # `python benchmarks/run.py`: import this folder as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not benchmarks/
    __package__ = "benchmarks"

from reconad.errors import ReconadError  # noqa: E402

from . import (  # noqa: E402
    defects,
    fuzz,
    peers,
    quality,
    real_defects,
    robustness,
    scale,
    serve,
    speed,
)
from .common import Context, machine, write_results  # noqa: E402

BENCHMARKS = {
    "holdout-4-8": quality.holdout_4_8,
    "one-class-mnist": quality.one_class_mnist,
    "one-class-0": quality.one_class_0,
    "noise": quality.noise,
    "contamination": quality.contamination,
    "speed": speed.speed,
    "peers": peers.peers,
    "fuzz": fuzz.fuzz,
    "defects": defects.defects,
    "scale": scale.scale,
    "serve": serve.serve,
    "robustness": robustness.robustness,
    "real-defects": real_defects.real_defects,
}
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget to try it out; results go to a temporary folder")
    parser.add_argument("--seeds", type=int, default=1,
                        help="number of seeds: S..S+N-1 with S = --seed-start (default 1)")
    parser.add_argument("--seed-start", type=int, default=0, metavar="S",
                        help="first seed (default 0, the reported numbers); e.g. 100 for the "
                             "selection seeds settings are chosen on, written to NAME-selection.*")
    parser.add_argument("--data-dir", help="folder holding MNIST (else $RECONAD_DATA, cache)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra reconad config override for every run (repeatable)")
    parser.add_argument("--workers", type=int, default=1,
                        help="serve: uvicorn worker processes of the service (default 1)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.seed_start < 0:
        parser.error("--seed-start must be at least 0")
    if any(s.partition("=")[0].strip() == "seed" for s in args.sets):
        parser.error("--set seed=... would give every run one seed; use --seeds and --seed-start")
    out = args.out or (Path(tempfile.mkdtemp(prefix=f"reconad-bench-{args.name}-"))
                       if args.quick else RESULTS)
    if args.quick and out.resolve() == RESULTS:
        parser.error("--quick results never go to benchmarks/results; give another --out")
    out.mkdir(parents=True, exist_ok=True)

    ctx = Context(name=args.name, out=out, quick=args.quick, seeds=args.seeds,
                  seed_start=args.seed_start, data_dir=args.data_dir, sets=args.sets,
                  workers=args.workers)
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None
                                                             else argv)])
    started = time.perf_counter()
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    try:
        headline, rows = BENCHMARKS[args.name](ctx)
    except ReconadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {**headline, "wall_seconds": round(time.perf_counter() - started, 1),
              "command": command, "date": date, "machine": machine(), "quick": args.quick,
              "seeds": args.seeds, "seed_list": ctx.seed_list}
    paths = write_results(out, ctx.stem, report, rows)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    print("wrote " + ", ".join(str(p) for p in [*paths, *out.glob(f"{ctx.stem}.png")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

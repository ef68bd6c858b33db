"""Benchmark `launch aggregate` on 1,000 synthetic run folders with 1,000 logged points each.

Builds a grid of 10 methods x 5 bit widths x 20 seeds in a temporary root, writes each run's
metrics.jsonl (1,000 records: Vacc, Vloss, est_var and loss over 250 steps), status.json and results.json
in the trainer's formats, then times the whole `launch aggregate` command in-process (grid expansion,
state of every run, reading every metrics file, grouping over seeds, rendering), and once more as a new
`python -m launcher aggregate` process (interpreter start and imports included). Target: under 5 s.
Writes bench/results/aggregate.json with keys runs, points, aggregate_s (median of 3 timed runs).

    PYTHONPATH=$PWD python bench/bench_aggregate.py [--runs 1000] [--points 1000]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher import cli  # noqa: E402
from launcher.selection import select_runs  # noqa: E402
from trainer import runfiles  # noqa: E402

TAGS = ("Vacc", "Vloss", "est_var", "loss")
METHODS = ["q", "qinf", "nuq", "trn", "alq", "alq_nb", "alqg", "alqg_nb", "amq", "amq_nb"]
GRID = """
from launcher.registry import GridRun, register

@register
def bench():
    return GridRun({{"dataset": "digits", "nuq_method": {methods}, "nuq_bits": [2, 3, 4, 5, 6],
                     "seed": list(range({seeds})), "niters": {niters}}}, "bench")
"""


def write_runs(base: Path, runs: int, points: int) -> tuple[Path, Path]:
    """The grid file and root holding `runs` done run folders with `points` metrics records each."""
    seeds = max(1, runs // (len(METHODS) * 5))
    steps = max(1, points // len(TAGS))
    grid = base / "bench_grid.py"
    grid.write_text(GRID.format(methods=METHODS, seeds=seeds, niters=steps * 10))
    root = base / "runs"
    selection = select_runs(Namespace(grid=str(grid), run="bench", only=[], set=[], limit=None, root=str(root)))
    rng = np.random.default_rng(0)
    for spec in selection.runs[:runs]:
        spec.dir.mkdir(parents=True)
        values = rng.random((steps, len(TAGS)))
        lines = []
        for i in range(steps):
            for j, tag in enumerate(TAGS):
                lines.append(json.dumps({"tag": tag, "step": (i + 1) * 10, "value": float(values[i, j]),
                                         "wall": 1.7e9 + i}))
        (spec.dir / runfiles.METRICS).write_text("\n".join(lines) + "\n")
        final = dict(zip(TAGS, values[-1].tolist()))
        runfiles.atomic_write_json(spec.dir / runfiles.STATUS, {"state": "done", "iteration": steps * 10,
                                                                "niters": steps * 10, "heartbeat": 0})
        runfiles.atomic_write_json(spec.dir / runfiles.RESULTS, {"status": "done", "niters": steps * 10,
                                                                 "final": final, "wall_s": 1.0})
    return grid, root


def time_aggregate(grid: Path, root: Path, *extra: str) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one `launch aggregate` call; CPU time shows what the
    command costs when other jobs share the machine and stretch its wall-clock time."""
    argv = ["aggregate", "--grid", str(grid), "--run", "bench", "--root", str(root), *extra]
    sink = io.StringIO()
    cpu, start = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = cli.main(argv)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if code != 0:
        raise SystemExit(f"aggregate failed ({code}): {sink.getvalue()[-500:]}")
    return elapsed, cpu


def time_subprocess(grid: Path, root: Path) -> tuple[float, float]:
    """(wall s, CPU s) of `python -m launcher aggregate` as a user runs it: interpreter start and imports too."""
    argv = [sys.executable, "-m", "launcher", "aggregate", "--grid", str(grid), "--run", "bench", "--root", str(root)]
    before = os.times()
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    after = os.times()
    return elapsed, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_aggregate_") as tmp:
        t0 = time.perf_counter()
        grid, root = write_runs(Path(tmp), args.runs, args.points)
        build_s = time.perf_counter() - t0
        cases = {"final, default metrics": (), "best:Vacc, 3 metrics": ("--at", "best:Vacc", "--metric",
                                                                        "Vacc,Vloss,est_var"),
                 "per-run csv": ("--by", "run", "--format", "csv")}
        timings = {name: [time_aggregate(grid, root, *extra) for _ in range(args.repeat)]
                   for name, extra in cases.items()}
        timings["new process (python -m)"] = [time_subprocess(grid, root) for _ in range(args.repeat)]
    print(f"{args.runs} runs x {args.points} points (folders built in {build_s:.1f} s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'case':<26} {'median s':>9} {'min s':>7} {'max s':>7} {'median CPU s':>13}")
    for name, runs in timings.items():
        walls = [wall for wall, _ in runs]
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<26} {statistics.median(walls):>9.3f} {min(walls):>7.3f} {max(walls):>7.3f} {cpu:>13.3f}")
    aggregate_s = statistics.median(wall for wall, _ in timings["final, default metrics"])
    print(f"aggregate_s = {aggregate_s:.3f} (target < 5 s: {'met' if aggregate_s < 5 else 'NOT met'})")
    out = ROOT / "bench" / "results" / "aggregate.json"
    runfiles.atomic_write_json(out, {"runs": args.runs, "points": args.points, "aggregate_s": round(aggregate_s, 3)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Benchmark: submit a 100-run array of a trivial trainer config to the test SLURM cluster and wait for it.

submit_s: wall time of the in-process `launch ... --cluster slurm` (select, write 100 config.yaml, one sbatch
through submitit, write 100 job.json). all_done_s: from the start of the submission until every run's
results.json says done. Each run is a real `python -m trainer` (10 iterations of digits), so all_done_s is
dominated by 100 interpreter + torch start-ups sharing the machine's cores (8 SLURM CPUs on 2 real cores here).
Starts the cluster (scripts/slurm_cluster.sh start; needs root) if it is not running.
Writes bench/results/slurm.json with exactly the keys runs, submit_s, all_done_s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launcher.registry import GridRun, register  # noqa: E402

RUNS = 100


@register
def trivial() -> GridRun:
    """RUNS seeds of a 10-iteration digits run (this file doubles as the benchmark's grid file)."""
    return GridRun({"dataset": "digits", "arch": "digits_mlp", "niters": 10, "chkpt_iter": 10,
                    "log_interval": 10, "tblog_interval": 10, "seed": list(range(RUNS))}, "trivial")


def done_count(folder: Path) -> int:
    n = 0
    for results in folder.glob("*/results.json"):
        try:
            n += json.loads(results.read_text()).get("status") == "done"
        except (OSError, ValueError):
            pass
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=1200.0, help="give up after this long")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "slurm.json"))
    args = parser.parse_args()
    subprocess.run(["bash", str(REPO / "scripts" / "slurm_cluster.sh"), "start"], check=True)
    from launcher import cli

    with tempfile.TemporaryDirectory(prefix="nuqlab-bench-slurm-") as root:
        t0 = time.perf_counter()
        code = cli.main(["--grid", __file__, "--run", "trivial", "--root", root, "--cluster", "slurm",
                         "--time-min", "30"])
        submit_s = time.perf_counter() - t0
        if code != 0:
            print(f"submission failed with exit code {code}", file=sys.stderr)
            return 1
        folder = Path(root) / "trivial"
        while (n := done_count(folder)) < RUNS:
            if time.perf_counter() - t0 > args.timeout_s:
                print(f"timed out: {n}/{RUNS} runs done after {args.timeout_s:.0f}s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        all_done_s = time.perf_counter() - t0
    result = {"runs": RUNS, "submit_s": round(submit_s, 3), "all_done_s": round(all_done_s, 1)}
    print(f"{'runs':>6} {'submit_s':>10} {'all_done_s':>11}")
    print(f"{RUNS:>6} {submit_s:>10.3f} {all_done_s:>11.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

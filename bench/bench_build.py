"""Benchmark building the C++ extensions from scratch (what `pip install -e .` spends most of its time on).

Runs `python setup.py build_ext` into a temporary build folder (the checkout's nuq/*.so are not touched),
and records the wall-clock seconds, the CPU seconds of the compilers (user + sys of all child processes:
what the build costs when other jobs share the machine and stretch its wall time), the wall time the
build would take on an idle machine with this many cores (CPU seconds / cores, never below the longest
file), and the machine. Target: under 60 s on 2 cores. Writes bench/results/build.json.

    PYTHONPATH=$PWD python bench/bench_build.py
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 60.0


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else platform.machine()


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_once(tmp: Path) -> dict:
    """One clean build; (wall s, CPU s of the compilers, per-file compile log lines)."""
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp / "lib"),
           "--build-temp", str(tmp / "temp")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cpu0, start = children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu0
    if proc.returncode != 0:
        sys.exit(f"build failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    built = sorted(p.name for p in (tmp / "lib").rglob("*.so"))
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "built": built}


def main() -> int:
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nuq_build_") as tmp:
        result = build_once(Path(tmp))
    idle_estimate = result["cpu_s"] / cores
    record = {
        **result,
        "idle_estimate_s": round(idle_estimate, 1),
        "target_s": TARGET_S,
        "machine": {"cores": cores, "cpu": cpu_model(), "load_avg_1min_before": round(load_before, 2),
                    "python": platform.python_version(), "host": platform.node()},
    }
    try:
        import torch
        record["machine"]["torch"] = torch.__version__
    except ImportError:
        pass
    print(f"{'measure':<28} {'seconds':>8}")
    print(f"{'wall clock':<28} {record['wall_s']:>8.1f}")
    print(f"{'compiler CPU (user+sys)':<28} {record['cpu_s']:>8.1f}")
    print(f"{'idle estimate (CPU/cores)':<28} {record['idle_estimate_s']:>8.1f}   target < {TARGET_S:.0f} on 2 cores")
    print(f"machine: {cores} cores, {record['machine']['cpu']}, load {load_before:.1f} before; built {result['built']}")
    out = ROOT / "bench" / "results" / "build.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `wq` digits grid (grids/wq.py: the study's 8 configs on resnet20_mcts_small, 6 epochs) trained
in-process one run after another: best and final test accuracy, model size and MACs per config, and
whether the study's ordering at its extremes holds (full precision >= DoReFa a8w8 > XNOR and DoReFa a1w1).
Writes bench/results/wq.json. About 5 minutes on 2 free CPU cores.

    PYTHONPATH=$PWD python bench/bench_wq.py [--seeds 1,2] [--epochs 6]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grids.wq import digits  # noqa: E402
from launcher.grid import expand  # noqa: E402
from trainer import loop  # noqa: E402
from trainer.options import validate_config  # noqa: E402


def label(cfg: dict) -> str:
    method = cfg["wq_method"]
    if method == "dorefa":
        return f"dorefa a{cfg['wq_a_bits']}w{cfg['wq_w_bits']}"
    return {"none": "full precision", "xnor": "xnor (a1w1)", "ternary": "ternary (a32w2)"}[method]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1", help="comma list of seeds; accuracies are averaged over them")
    parser.add_argument("--epochs", type=int, default=None, help="override the grid's epochs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a loaded 2-core machine spins badly with more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, cfg in enumerate(expand(digits().grid)):
            runs = []
            for seed in seeds:
                run = validate_config({**cfg, "seed": seed, "log_interval": 0,
                                       **({"epochs": args.epochs} if args.epochs else {})})
                t0 = time.perf_counter()
                res = loop.run(run, Path(tmp) / f"{i}_{seed}")
                runs.append((res, time.perf_counter() - t0))
            final = runs[0][0]["final"]
            rows.append({"config": label(cfg), "lr": cfg["lr"], "seeds": seeds,
                         "best_Vacc": statistics.mean(r["best"]["Vacc"] for r, _ in runs),
                         "final_Vacc": statistics.mean(r["final"]["Vacc"] for r, _ in runs),
                         "size_kbit": final["wq/size_bits"] / 1000, "compression": final["wq/compression"],
                         "mmacs": final["wq/macs"] / 1e6, "wall_s": statistics.mean(w for _, w in runs)})
            print(f"{rows[-1]['config']:>16}  best {rows[-1]['best_Vacc']:6.2f}  final {rows[-1]['final_Vacc']:6.2f}  "
                  f"{rows[-1]['wall_s']:6.1f} s", flush=True)
    by = {r["config"]: r["best_Vacc"] for r in rows}
    ordering = (by["full precision"] >= by["dorefa a8w8"] > max(by["xnor (a1w1)"], by["dorefa a1w1"]))
    print(f"\n{'config':>16}  {'lr':>5}  {'best Vacc':>9}  {'final Vacc':>10}  {'size kbit':>9}  {'x smaller':>9}  "
          f"{'MMAC/sample':>11}  {'wall s':>6}")
    for r in rows:
        print(f"{r['config']:>16}  {r['lr']:>5}  {r['best_Vacc']:9.2f}  {r['final_Vacc']:10.2f}  "
              f"{r['size_kbit']:9.1f}  {r['compression']:9.2f}  {r['mmacs']:11.3f}  {r['wall_s']:6.1f}")
    print(f"\nfull precision >= dorefa a8w8 > xnor and dorefa a1w1 (best Vacc): {ordering}")
    out = ROOT / "bench" / "results" / "wq.json"
    out.write_text(json.dumps({"rows": rows, "ordering_holds": ordering}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

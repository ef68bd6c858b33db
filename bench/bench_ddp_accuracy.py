"""Benchmark: bytes vs accuracy of data-parallel training with PyTorch's DDP hooks and with nuq_dist.

Trains the digits MLP on 2 real gloo ranks through the trainer (launcher.executors.distributed.run_local), once
per row, with the same config, seed and iterations: fp32 (`nuq_dist`, `nuq_method none`: an fp32
all-reduce), PyTorch's communication hooks (`g_estim=ddp_hook`: fp16, bf16, PowerSGD rank 1/2/4, through a
real DistributedDataParallel) and our quantized exchange (`g_estim=nuq_dist`: qinf at 2/3/4 bits, amq at
3 bits with adapted levels). Per row: bytes each rank all-reduces/sends per step (`comm/message_bytes`),
the final validation accuracy (Vacc), and the gradient variance the trainer measures (estim.gvar, every
`--gvar-every` steps, `--gvar-samples` draws): est_var averaged over the measurements and its ratio to the
fp32 row's (each run measures along its own trajectory, so small ratios are within noise; the fp32 row is
the 2-rank average without compression, i.e. the floor).

    PYTHONPATH=$PWD python bench/bench_ddp_accuracy.py      # writes bench/results/ddp_accuracy.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUQ = {"g_estim": "nuq_dist", "nuq_bucket_size": 1024}
ROWS: dict[str, dict] = {
    "fp32": {**NUQ, "nuq_method": "none"},
    "fp16": {"g_estim": "ddp_hook", "ddp_hook": "fp16"},
    "bf16": {"g_estim": "ddp_hook", "ddp_hook": "bf16"},
    **{f"powersgd{r}": {"g_estim": "ddp_hook", "ddp_hook": "powersgd", "ddp_powersgd_rank": r} for r in (1, 2, 4)},
    **{f"qinf{b}": {**NUQ, "nuq_method": "qinf", "nuq_bits": b} for b in (2, 3, 4)},
    "amq3": {**NUQ, "nuq_method": "amq", "nuq_bits": 3, "g_optim": True, "g_osnap_iter": "50,150"},
}


def base_config(args: argparse.Namespace, seed: int) -> dict:
    every = args.gvar_every
    return {"dataset": "digits", "arch": "digits_mlp", "niters": args.niters, "batch_size": args.batch, "lr": 0.05,
            "seed": seed, "tblog_interval": every, "log_interval": args.niters, "chkpt_iter": args.niters,
            "gvar_log_iter": every, "gvar_start": every, "gvar_estim_iter": args.gvar_samples}


def metrics(run_dir: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["tag"], []).append(row["value"])
    return out


def run_row(name: str, config: dict, tmp: Path) -> dict:
    from launcher.executors.distributed import run_local
    run_dir = tmp / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    t0 = time.perf_counter()
    run_local(run_dir / "config.yaml", 2, timeout_s=120)
    m = metrics(run_dir)
    final = json.loads((run_dir / "results.json").read_text())["final"]
    return {"Vacc": final["Vacc"], "bytes_per_rank": statistics.mean(m["comm/message_bytes"]),
            "est_var": statistics.mean(m["est_var"]), "sgd_var": statistics.mean(m["sgd_var"]),
            "est_nvar": statistics.mean(m["est_nvar"]), "wall_s": time.perf_counter() - t0}


def summarise(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean over seeds of every number; var_vs_fp32 and bytes_vs_fp32 against the fp32 row."""
    rows = {name: {k: statistics.mean(r[k] for r in runs) for k in runs[0]} for name, runs in per_seed.items()}
    for name, row in rows.items():
        row["Vacc_per_seed"] = [r["Vacc"] for r in per_seed[name]]
        if "fp32" in rows:
            row["var_vs_fp32"] = row["est_var"] / rows["fp32"]["est_var"]
            row["bytes_vs_fp32"] = row["bytes_per_rank"] / rows["fp32"]["bytes_per_rank"]
    return rows


def print_table(rows: dict[str, dict]) -> None:
    print(f"{'':>10} {'bytes/rank':>10} {'vs fp32':>8} {'Vacc':>7} {'est_var':>10} {'var/fp32':>8} {'est_nvar':>9}")
    nan = float("nan")
    for name, r in rows.items():
        print(f"{name:>10} {r['bytes_per_rank']:>10.0f} {r.get('bytes_vs_fp32', nan):>8.3f} {r['Vacc']:>7.2f} "
              f"{r['est_var']:>10.3e} {r.get('var_vs_fp32', nan):>8.2f} {r['est_nvar']:>9.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="rows to run: " + ", ".join(ROWS))
    parser.add_argument("--seeds", default="1", help="comma list; every row runs each seed")
    parser.add_argument("--niters", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="minibatch per rank")
    parser.add_argument("--gvar-every", type=int, default=100)
    parser.add_argument("--gvar-samples", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ddp_accuracy.json"))
    args = parser.parse_args(argv)
    names = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"unknown --rows {', '.join(unknown)}; known: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    from trainer import runfiles
    per_seed: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for name in names:
                per_seed.setdefault(name, []).append(
                    run_row(name, {**base_config(args, seed), **ROWS[name]}, Path(tmp) / f"s{seed}"))
                print(f"seed {seed} {name}: {per_seed[name][-1]}", flush=True)
    rows = summarise(per_seed)
    print_table(rows)
    setup = {"ranks": 2, "backend": "gloo", "dataset": "digits", "arch": "digits_mlp", "niters": args.niters,
             "batch_per_rank": args.batch, "seeds": seeds, "gvar_every": args.gvar_every,
             "gvar_samples": args.gvar_samples, "configs": {n: ROWS[n] for n in names}}
    runfiles.atomic_write_json(args.out, {"rows": rows, "setup": setup})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

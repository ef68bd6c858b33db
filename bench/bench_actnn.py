"""Benchmark of the `actnn` plugin: saved-activation bytes, step time, compress throughput.

* saved_bytes_*: bytes of every tensor autograd saves during one forward of preact_resnet56 on 32x32
  inputs (counted by a torch.autograd.graph.saved_tensors_hooks pack hook, each storage once, parameters
  excluded), fp32 vs 2-bit `quantize` mode with 1-bit ReLU masks (per-group, group 64, bf16 min/scale).
* step_s_*: one forward+backward+SGD step, best of `--repeats` (the throughputs below: of at least 10); the fp32 and 2-bit steps alternate, so a
  burst of load on a shared machine slows both (step_ratio is of one run).
* compress_gbps vs copy_gbps: the plugin's compress (nuq's fused group codec: range, Philox noise, round,
  pack) of a 2^24-value activation (2 bits, groups of 64) against `copy_` of the same float32 tensor;
  bytes = 4 read per value (the copy: 4 read + 4 written); decompress_gbps: 4 written per value.
  compress_gbps_per_path: the same on each CPU path of the codec this CPU has.
* cpu_model, cpu_kernel (the codec's CPU path), threads, load_avg_1min (before the run: others' load).
Writes bench/results/actnn.json.

    PYTHONPATH=$PWD python bench/bench_actnn.py [--batch 128] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

from bench_kernel import available_paths, best_time, cpu_model
from nuq import groupquant, kernel
from trainer.models import create_model
from trainer.options import full_config
from trainer.plugins.actnn_quant import compress, decompress
from trainer.plugins.base import get_plugin_class
from trainer.runfiles import atomic_write_json

N = 1 << 24


def model(compressed: bool) -> nn.Module:
    torch.manual_seed(0)
    net = create_model("preact_resnet56", 10, (3, 32, 32))
    if compressed:
        opt = full_config({"plugins": "actnn", "actnn_mode": "quantize", "actnn_cabits": 2, "actnn_ibits": 2,
                           "actnn_perlayer": False, "actnn_relu_mask": True})
        net = get_plugin_class("actnn")(opt).configure_model(net)
    return net.train()


def saved_bytes(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd holds after one forward: each saved storage once, parameters not counted."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    return sum(seen.values())


def step_times(nets: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict[str, float]:
    """Best step time of each net, their steps alternating (after one warm-up step each)."""
    opts = {k: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) for k, net in nets.items()}

    def step(k: str) -> float:
        t0 = time.perf_counter()
        opts[k].zero_grad()
        nn.functional.cross_entropy(nets[k](x), y).backward()
        opts[k].step()
        return time.perf_counter() - t0
    for k in nets:
        step(k)
    best = {k: float("inf") for k in nets}
    for _ in range(repeats):
        for k in nets:
            best[k] = min(best[k], step(k))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "actnn.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
    fp32, two = model(False), model(True)
    res = {"batch": args.batch, "threads": torch.get_num_threads(), "cpu_model": cpu_model(),
           "cpu_kernel": groupquant.cpu_kernel(), "load_avg_1min": os.getloadavg()[0],
           "saved_bytes_fp32": saved_bytes(fp32, x, y), "saved_bytes_2bit": saved_bytes(two, x, y)}
    steps = step_times({"fp32": fp32, "2bit": two}, x, y, args.repeats)
    res["step_s_fp32"], res["step_s_2bit"] = steps["fp32"], steps["2bit"]
    fast = max(10, args.repeats)  # the throughputs take milliseconds: best of more calls
    act = torch.randn(N // 4096, 4096)
    bits = torch.full((act.shape[0],), 2)
    dst = torch.empty_like(act)
    res["compress_gbps"] = 4 * N / best_time(lambda: compress(act, bits, 64, True), fast) / 1e9
    res["copy_gbps"] = 8 * N / best_time(lambda: dst.copy_(act), fast) / 1e9
    packed = compress(act, bits, 64, True)
    res["decompress_gbps"] = 4 * N / best_time(lambda: decompress(packed), fast) / 1e9
    per_path = {}
    for path in available_paths():
        with kernel.forced_cpu_kernel(path):
            per_path[path] = 4 * N / best_time(lambda: compress(act, bits, 64, True), fast) / 1e9
    res["compress_gbps_per_path"] = per_path
    res["memory_ratio"] = res["saved_bytes_fp32"] / res["saved_bytes_2bit"]
    res["step_ratio"] = res["step_s_2bit"] / res["step_s_fp32"]
    res["compress_vs_copy"] = res["compress_gbps"] / res["copy_gbps"]
    for key, value in res.items():
        print(f"{key:22s} {value:.4g}" if isinstance(value, float) else f"{key:22s} {value}")
    atomic_write_json(Path(args.out), res)


if __name__ == "__main__":
    main()

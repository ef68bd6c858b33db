"""Benchmark of the quantize kernel: 2^24 float32 values, 3 bits (QSGD levels, L2), buckets of 8192.

Prints elements/s and GB/s of the pure-PyTorch reference, the C++ CPU kernel at 1 and 2 threads (and the
generic kernel that CPUs without AVX2 run, at 1 thread), a plain
`copy_` of the same tensor at 1 thread (the memory-bandwidth ceiling) and, on a GPU, the CUDA kernel and a
device copy; writes bench/results/kernel.json with the keys the issue names. Bandwidth counts bytes read
plus bytes written (8 per element for both the copy and the kernel). Like the copy into an existing
tensor, the kernel rows write into a preallocated output (`out=`); the table also shows the allocating
call, whose fresh 64 MiB output pays page faults. The next line is the cost of a small call (1024 values,
1 thread): what checks and the op dispatch add per call, which a model's many small layers pay. Each timing
is the best of several repeats, all within one run, so the ratios are fair even on a busy machine. Then, for
every CPU kernel path this CPU can run (avx512, avx2, generic; forced as NUQ_CPU_KERNEL would), 1 thread:
quantize, encode (quantize into packed bits + norms) and decode of the same vector at 3 bits, and quantize at
8 bits (256 levels: the many-levels search), in `per_path`; `cpu_kernel_path` is the path a default call
runs, `cpu_model` the CPU's name.

    PYTHONPATH=$PWD python bench/bench_kernel.py [--out bench/results/kernel.json] [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from nuq import kernel
from nuq.levels import get_method
from trainer.runfiles import atomic_write_json

N, BITS, BUCKET = 1 << 24, 3, 8192
BYTES_PER_ELEMENT = 8  # 4 read + 4 written
SMALL, SMALL_CALLS = 1024, 2000  # the small call: values, calls per timing


def best_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()  # warm-up (allocations, thread pools, CUDA context)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_gbps(x: torch.Tensor, y: torch.Tensor, threads: int, repeats: int) -> float:
    """Bandwidth of y.copy_(x) on `threads` torch threads (bytes read plus written)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return BYTES_PER_ELEMENT * N / best_time(lambda: y.copy_(x), repeats) / 1e9
    finally:
        torch.set_num_threads(before)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") or line.startswith("Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_paths() -> list[str]:
    """The CPU kernel paths this CPU (and build) can run, fastest first."""
    paths = []
    for name in ("avx512", "avx2", "generic"):
        try:
            with kernel.forced_cpu_kernel(name):
                paths.append(name)
        except ValueError:
            pass
    return paths


def per_path(x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict[str, dict[str, float]]:
    """1-thread Melem/s of quantize, encode and decode at BITS bits, and quantize at 8 bits, per forced path."""
    out: dict[str, dict[str, float]] = {}
    lv, lv8 = get_method("q").init_levels(BITS, 0.5), get_method("q").init_levels(8, 0.5)
    message = torch.empty(4 * -(-N // BUCKET) + -(-N * BITS // 8), dtype=torch.uint8)
    rate = lambda fn: N / best_time(fn, repeats) / 1e6  # noqa: E731
    for name in available_paths():
        with kernel.forced_cpu_kernel(name):
            row = {"ran": kernel.cpu_kernel(lv),
                   "quantize_melem_s_1t": rate(lambda: kernel.quantize(x, lv, BUCKET, "l2", 1, 0, num_threads=1,
                                                                       out=y)),
                   "encode_melem_s_1t": rate(lambda: kernel.encode_packed(x, lv, BUCKET, "l2", 1, 0, message,
                                                                          num_threads=1)),
                   "quantize_8bit_melem_s_1t": rate(lambda: kernel.quantize(x, lv8, BUCKET, "l2", 1, 0,
                                                                            num_threads=1, out=y))}
            if kernel.fused_decode_supported(N, x.device, lv, BUCKET):
                row["decode_melem_s_1t"] = rate(lambda: kernel.decode_packed(message, N, lv, BUCKET, num_threads=1))
            out[name] = row
    return out


def measure(repeats: int) -> tuple[dict[str, float], float]:
    torch.manual_seed(0)
    x = torch.randn(N)
    lv = get_method("q").init_levels(BITS, 0.5)
    y = torch.empty_like(x)
    res: dict[str, float] = {"n": N, "bits": BITS, "bucket": BUCKET}
    res["copy_gbps_1t"] = copy_gbps(x, y, 1, repeats)
    t_ref = best_time(lambda: kernel.quantize(x, lv, BUCKET, "l2", 1, 0, backend="reference"), 1)
    res["reference_melem_s"] = N / t_ref / 1e6
    for t in (1, 2):
        dt = best_time(lambda: kernel.quantize(x, lv, BUCKET, "l2", 1, 0, num_threads=t, out=y), repeats)
        res[f"cpu_kernel_melem_s_{t}t"] = N / dt / 1e6
    with kernel.only_generic_cpu_kernel():  # the portable kernel, for CPUs without AVX2
        dt = best_time(lambda: kernel.quantize(x, lv, BUCKET, "l2", 1, 0, num_threads=1, out=y), repeats)
    res["cpu_generic_kernel_melem_s_1t"] = N / dt / 1e6
    res["cpu_kernel"] = kernel.cpu_kernel(lv)
    res["cpu_kernel_path"] = res["cpu_kernel"]
    res["cpu_model"] = cpu_model()
    res["copy_gbps_2t"] = copy_gbps(x, y, 2, repeats)
    alloc = N / best_time(lambda: kernel.quantize(x, lv, BUCKET, "l2", 1, 0, num_threads=1), repeats) / 1e6
    small = x[:SMALL].clone()
    res["small_call_us"] = 1e6 / SMALL_CALLS * best_time(
        lambda: [kernel.quantize(small, lv, 512, "l2", 1, 0, num_threads=1) for _ in range(SMALL_CALLS)], repeats)
    if torch.cuda.is_available():
        xc, yc, lc = x.cuda(), torch.empty_like(x, device="cuda"), lv.cuda()
        sync = torch.cuda.synchronize
        res["cuda_copy_gbps"] = BYTES_PER_ELEMENT * N / best_time(lambda: yc.copy_(xc), repeats * 4, sync) / 1e9
        dt = best_time(lambda: kernel.quantize(xc, lc, BUCKET, "l2", 1, 0, out=yc), repeats * 4, sync)
        res["cuda_kernel_melem_s"] = N / dt / 1e6
    res["per_path"] = per_path(x, y, repeats)
    return res, alloc


def report(res: dict[str, float], alloc: float) -> str:
    gbps = lambda melem: melem * 1e6 * BYTES_PER_ELEMENT / 1e9  # noqa: E731
    rows = [("copy_ (1 thread)", res["copy_gbps_1t"] * 1e9 / BYTES_PER_ELEMENT / 1e6, res["copy_gbps_1t"]),
            ("reference", res["reference_melem_s"], gbps(res["reference_melem_s"])),
            ("CPU kernel, 1 thread", res["cpu_kernel_melem_s_1t"], gbps(res["cpu_kernel_melem_s_1t"])),
            ("CPU kernel, 2 threads", res["cpu_kernel_melem_s_2t"], gbps(res["cpu_kernel_melem_s_2t"])),
            ("CPU kernel 1t, allocating", alloc, gbps(alloc)),
            ("generic CPU kernel, 1 thread", res["cpu_generic_kernel_melem_s_1t"],
             gbps(res["cpu_generic_kernel_melem_s_1t"])),
            ("copy_ (2 threads)", res["copy_gbps_2t"] * 1e9 / BYTES_PER_ELEMENT / 1e6, res["copy_gbps_2t"])]
    if "cuda_kernel_melem_s" in res:
        rows += [("CUDA copy_", res["cuda_copy_gbps"] * 1e9 / BYTES_PER_ELEMENT / 1e6, res["cuda_copy_gbps"]),
                 ("CUDA kernel", res["cuda_kernel_melem_s"], gbps(res["cuda_kernel_melem_s"]))]
    lines = [f"n={res['n']} bits={res['bits']} bucket={res['bucket']} cpu kernel={res['cpu_kernel']}",
             f"{'':26s} {'Melem/s':>10s} {'GB/s':>8s}"]
    lines += [f"{name:26s} {m:10.1f} {g:8.2f}" for name, m, g in rows]
    k1 = res["cpu_kernel_melem_s_1t"]
    lines.append(f"CPU kernel 1t / reference: {k1 / res['reference_melem_s']:.0f}x (target >= 50x); "
                 f"1t bandwidth / copy_ 1t: {gbps(k1) / res['copy_gbps_1t']:.0%} (target >= 40%); "
                 f"2t / copy_ 2t: {gbps(res['cpu_kernel_melem_s_2t']) / res['copy_gbps_2t']:.0%}")
    lines.append(f"\nper CPU kernel path, 1 thread, Melem/s ({res['cpu_model']}; default path {res['cpu_kernel_path']})")
    lines.append(f"{'path':8s} {'quantize':>9s} {'% copy_':>8s} {'encode':>8s} {'enc/quant':>9s} {'decode':>8s} "
                 f"{'8-bit quant':>11s}")
    copy_melem = res["copy_gbps_1t"] * 1e9 / BYTES_PER_ELEMENT / 1e6
    for name, r in res["per_path"].items():
        q = r["quantize_melem_s_1t"]
        lines.append(f"{name:8s} {q:9.1f} {q / copy_melem:8.0%} {r['encode_melem_s_1t']:8.1f} "
                     f"{q / r['encode_melem_s_1t']:9.2f} {r.get('decode_melem_s_1t', float('nan')):8.1f} "
                     f"{r['quantize_8bit_melem_s_1t']:11.1f}")
    if "cuda_kernel_melem_s" in res:
        lines.append(f"CUDA kernel bandwidth / CUDA copy_: "
                     f"{gbps(res['cuda_kernel_melem_s']) / res['cuda_copy_gbps']:.0%} (target >= 60%)")
    lines.append(f"small call ({SMALL} values, 1 thread): {res['small_call_us']:.1f} us")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "kernel.json"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    res, alloc = measure(args.repeats)
    print(report(res, alloc))
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

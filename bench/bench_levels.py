"""Times a full adaptive level update per method: bucket statistics of a resnet32-sized gradient, then
the fit (model distribution + optimisation), at 3 bits, bucket 8192, dist_num 50, 50,000 bins.

Writes bench/results/levels.json: {"stats_ms", "fit_ms": {method: ms}, "variance": {method: var}}.
Times are the best of --repeats runs on one thread (the machine is shared, so the best run is the
least disturbed one); medians and CPU times are printed too, with the paper's quadrature for comparison.

    PYTHONPATH=$PWD python bench/bench_levels.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import integrate

from nuq.dists import TruncNorm
from nuq.stats import bucket_stats
from nuq.adaptive import METHODS, fit_levels, model_distribution
from nuq.fit_base import FITTERS
from nuq.levels import exponential_levels, uniform_levels
from trainer.runfiles import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "levels.json"


def resnet32_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of the CIFAR-10 ResNet-32 (464,154 values): 3 stages of 5 basic blocks."""
    shapes: list[tuple[int, ...]] = [(16, 3, 3, 3), (16,), (16,)]
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(5):
            shapes += [(cout, cin, 3, 3), (cout,), (cout,), (cout, cout, 3, 3), (cout,), (cout,)]
            cin = cout
    return shapes + [(10, 64), (10,)]


def synthetic_gradient(seed: int = 0) -> list[torch.Tensor]:
    """A seeded stand-in for one minibatch gradient: per-layer scales spread over two decades and a
    few large coordinates, so buckets differ in norm as real gradients do."""
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for shape in resnet32_shapes():
        scale = 10 ** (-2 * torch.rand((), generator=gen).item())
        g = torch.randn(shape, generator=gen) * scale
        spikes = torch.rand(shape, generator=gen) < 0.01
        grads.append(torch.where(spikes, g * 8.0, g) + 0.1 * scale)
    return grads


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) milliseconds of `repeats` calls, after one warm-up call.
    CPU time (this process only) shows the work itself when other jobs crowd the cores."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return min(wall), statistics.median(wall), min(cpu)


def quad_variance(dist: TruncNorm, levels: np.ndarray) -> float:
    """The paper's way: scipy quad over a Python callback per interval (for the speed comparison)."""
    return sum(integrate.quad(lambda r: (r - a) * (b - r) * float(dist.pdf(r)), a, b)[0]
               for a, b in zip(levels[:-1], levels[1:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--bucket-size", type=int, default=8192)
    ap.add_argument("--dist-num", type=int, default=50)
    ap.add_argument("--nbins", type=int, default=50000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)

    grad = synthetic_gradient()
    nvalues = sum(g.numel() for g in grad)
    stats_fn = lambda: bucket_stats([grad], args.bucket_size, True, False, args.dist_num)  # noqa: E731
    stats_best, stats_med, stats_cpu = timed(stats_fn, args.repeats)
    stats = stats_fn()

    rows, fit_ms, variance = [], {}, {}
    for method in METHODS:
        best, med, cpu = timed(lambda: fit_levels(method, args.bits, stats, nbins=args.nbins), args.repeats)
        res = fit_levels(method, args.bits, stats, nbins=args.nbins)
        d = model_distribution(stats, FITTERS[method].norm_based, nbins=args.nbins)
        uni = d.variance(uniform_levels(args.bits).double().numpy())
        exp = d.variance(exponential_levels(args.bits, 0.5).double().numpy())
        fit_ms[method], variance[method] = round(best, 3), res.variance
        rows.append((method, best, med, cpu, res.variance, uni, exp))

    nl = model_distribution(stats, False)
    levels = fit_levels("alq", args.bits, stats).levels.double().numpy()
    closed_best, _, _ = timed(lambda: nl.variance(levels), args.repeats)
    quad_best, _, _ = timed(lambda: quad_variance(nl, levels), 3)

    print(f"gradient: {nvalues} values, {stats.nbuckets} buckets of {args.bucket_size}, "
          f"dist_num={args.dist_num}, nbins={args.nbins}, bits={args.bits}, 1 thread, best/median of "
          f"{args.repeats}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"statistics: {stats_best:.2f} ms (median {stats_med:.2f}, CPU {stats_cpu:.2f})")
    print(f"{'method':<9} {'fit ms':>8} {'median':>8} {'CPU ms':>8} {'variance':>11} {'uniform':>11} "
          f"{'exp 0.5':>11}")
    for method, best, med, cpu, var, uni, exp in rows:
        print(f"{method:<9} {best:8.2f} {med:8.2f} {cpu:8.2f} {var:11.4g} {uni:11.4g} {exp:11.4g}")
    print(f"one variance evaluation: closed form {closed_best * 1e3:.1f} us, scipy quad "
          f"{quad_best:.1f} ms ({quad_best / closed_best:.0f}x)")
    atomic_write_json(args.out, {"stats_ms": round(stats_best, 3), "fit_ms": fit_ms, "variance": variance})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

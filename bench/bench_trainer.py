"""Trainer speed: time per iteration of resnet32 at batch 128 on this machine's CPU, and the fraction of it
spent outside forward/backward/optimizer (data batching and augmentation, lr schedule, logging, heartbeats).

Runs the real loop (`trainer.loop.run`) on a fake CIFAR-10 folder written in the real pickle format.
Forward/backward and the optimizer step are timed inside the same run (a timing estimator subclass and a
wrapped optimizer step), so the ratio is not disturbed by load changes between separate runs.
Writes bench/results/trainer.json with keys step_s, overhead_frac (target: overhead_frac < 0.05).

    PYTHONPATH=$PWD python bench/bench_trainer.py [--niters 12]
"""
from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import estim.base
from trainer import loop

RESULTS = Path(__file__).resolve().parent / "results" / "trainer.json"


def write_fake_cifar10(folder: Path, per_batch: int) -> None:
    rs = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {b"data": rs.randint(0, 256, (per_batch, 3072), dtype=np.uint8),
               b"labels": rs.randint(0, 10, per_batch).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh)


class Timer:
    def __init__(self) -> None:
        self.compute_s = 0.0
        self.optim_s = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--niters", type=int, default=12)
    args = parser.parse_args()
    timer = Timer()

    class TimedSGD(estim.base.SGDEstimator):
        def minibatch_grad(self, stream):
            x, y = stream.next()  # batching + augmentation: overhead
            t0 = time.perf_counter()
            loss = self.loss_fn(self.model(x), y)
            grads = torch.autograd.grad(loss, self.params())
            value = float(loss.detach())
            timer.compute_s += time.perf_counter() - t0
            return [g.detach() for g in grads], value

    make_optimizer = loop.make_optimizer

    def timed_optimizer(opt, model):
        optimizer = make_optimizer(opt, model)
        step = optimizer.step

        def timed_step(*a, **k):
            t0 = time.perf_counter()
            out = step(*a, **k)
            timer.optim_s += time.perf_counter() - t0
            return out
        optimizer.step = timed_step
        return optimizer

    estim.base._REGISTRY["sgd"] = TimedSGD
    loop.make_optimizer = timed_optimizer
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cifar10"
        data.mkdir()
        write_fake_cifar10(data, per_batch=256)
        config = {"dataset": "cifar10", "data": str(data), "arch": "resnet32", "batch_size": 128,
                  "test_batch_size": 256, "niters": args.niters, "chkpt_iter": 0, "tblog_interval": 5,
                  "log_interval": 5, "no_cuda": True}
        results = loop.run(config, Path(tmp) / "run")
    total = results["step_s"] * args.niters
    overhead = total - timer.compute_s - timer.optim_s
    out = {"step_s": results["step_s"], "overhead_frac": overhead / total}
    print(f"resnet32, batch 128, CPU ({torch.get_num_threads()} threads), {args.niters} iterations of the real loop")
    print(f"{'part':<28}{'s/iter':>10}{'share':>9}")
    for name, secs in (("forward+backward", timer.compute_s), ("optimizer step", timer.optim_s),
                       ("everything else (overhead)", overhead)):
        print(f"{name:<28}{secs / args.niters:>10.4f}{secs / total:>9.2%}")
    print(f"{'step (total)':<28}{results['step_s']:>10.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}: {out}")


if __name__ == "__main__":
    main()

"""Rank bodies that tests/test_dist*.py run in real spawned processes (targets of launcher.distributed).

Each function runs inside one rank; it writes what the test asserts on to `out_dir/rank<r>.pt`, so the
assertions happen in the pytest process.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from launcher.distributed import init_process_group_from_env


def allreduce_until_killed(out_dir: str, victim: str, steps: str) -> None:
    """All-reduce in a loop; rank `victim` SIGKILLs itself after `steps` rounds (a crashed worker)."""
    init_process_group_from_env(no_cuda=True)
    rank = dist.get_rank()
    x = torch.ones(1000)
    for step in range(10_000):
        if rank == int(victim) and step == int(steps):
            Path(out_dir, "victim_dies").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        dist.all_reduce(x)
        x.fill_(1.0)
        time.sleep(0.01)
    raise AssertionError("the survivor should have failed when its peer died")


def stall_forever(out_dir: str, victim: str) -> None:
    """Rank `victim` stops answering (a hung worker); the others must time out, not hang."""
    init_process_group_from_env(no_cuda=True)
    if dist.get_rank() == int(victim):
        time.sleep(3600)
    dist.all_reduce(torch.ones(10))
    raise AssertionError("the all_reduce should have timed out")


def per_rank_vector(rank: int, n: int) -> torch.Tensor:
    """The float32 vector rank `rank` quantizes in the exchange tests (the test rebuilds it)."""
    g = torch.Generator().manual_seed(1000 + rank)
    return torch.randn(n, generator=g) * (1 + rank)


def exchange_round(out_dir: str, n: str, bits: str, bucket: str, backend: str) -> None:
    """Encode, exchange and average one vector per rank with every exchange; save results and sizes."""
    from nuq import codec, exchange
    from nuq.levels import METHODS
    init_process_group_from_env(no_cuda=True)
    rank = dist.get_rank()
    x = per_rank_vector(rank, int(n))
    q = exchange.Quant(METHODS["q"].init_levels(int(bits), 0.5), int(bucket), "l2",
                       None if backend == "default" else backend)
    stream = exchange.Stream(seed=7 + rank, offset=1000 * rank)
    out = {"message": codec.encode(x, q.levels, q.bucket_size, q.norm, stream.seed, stream.offset,
                                   backend=q.backend)}
    for name, fn in exchange.EXCHANGES.items():
        mean, stats = fn(x, q, stream)
        out[name] = mean
        out[name + "_stats"] = vars(stats)
    torch.save(out, Path(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def train_digits(*argv: str) -> None:
    """Train the run of `--config DIR/config.yaml` on this rank exactly as launcher.distributed does, and
    save this rank's final weights and estimator state to DIR/rank<r>.pt (a wrapper around the trainer's
    fit() observes them). $NUQ_TEST_KILL='<rank>:<iteration>' makes that rank SIGKILL itself there."""
    import trainer.loop as loop
    from launcher.distributed import train_rank
    out_dir = Path(argv[argv.index("--config") + 1]).parent
    fit, step = loop.Training.fit, loop.Training.step
    victim, _, at = os.environ.get("NUQ_TEST_KILL", "-1:-1").partition(":")

    def fit_and_save(self, resumed):
        results = fit(self, resumed)
        torch.save({"model": self.model.state_dict(), "estimator": self.estimator.state_dict()},
                   out_dir / f"rank{dist.get_rank()}.pt")
        return results

    def step_or_die(self, it):
        if dist.get_rank() == int(victim) and it == int(at):
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, it)
    loop.Training.fit, loop.Training.step = fit_and_save, step_or_die
    train_rank(*argv)

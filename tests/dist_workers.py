"""Rank bodies that tests/test_dist*.py run in real spawned processes (targets of launcher.executors.distributed.spawn_local; trainer.distributed runs them).

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

from trainer.distributed import init_process_group_from_env


def stall_forever(out_dir: str, victim: str) -> None:
    """Rank `victim` stops answering (a hung worker); the others must time out, not hang."""
    init_process_group_from_env(no_cuda=True)
    if dist.get_rank() == int(victim):
        Path(out_dir, "victim_stalls").write_text(repr(time.time()))
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
    out["estimator"] = {name: estimator_grads(opts, rank) for name, opts in ESTIMATOR_CASES.items()}
    torch.save(out, Path(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


# Quantization settings the distributed estimator is compared on with the simulated one: per-layer buckets
# with pass-through tails (layers smaller than a bucket travel whole) and TernGrad clipping; network-wide
# with the linf norm; ternary levels (3 levels -> 2 bits); no quantization.
ESTIMATOR_CASES = {
    "layers_tail_clip": {"nuq_method": "q", "nuq_bits": 3, "nuq_bucket_size": 64, "nuq_ig_sm_bkts": True,
                         "nuq_clip": True},
    "network_wide_linf": {"nuq_method": "qinf", "nuq_bits": 2, "nuq_bucket_size": 100, "nuq_layer": True},
    "ternary": {"nuq_method": "trn", "nuq_bits": 2, "nuq_bucket_size": 128},
    "full_precision": {"nuq_method": "none"},  # fp32 all-reduce (2 ranks: a + b, the same float sum)
    # a trainer plugin's extra loss term (c ||w||^2, tests/plugins_for_tests.py) under quantization and not
    "plugin_sqnorm": {"nuq_method": "q", "nuq_bits": 3, "nuq_bucket_size": 64, "plugins": "sqnorm", "sqnorm_c": 0.05},
    "plugin_sqnorm_fp": {"nuq_method": "none", "plugins": "sqnorm", "sqnorm_c": 0.05},
}
ESTIMATOR_CALLS = 2


class FixedBatches:
    """A BatchStream that cycles through given batches (each worker's minibatch, in worker order)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next(self):
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        return batch

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def worker_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(50 + rank)
    return torch.randn(8, 10, generator=g), torch.randint(0, 5, (8,), generator=g)


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)  # layer sizes 370, 37, 185, 5: full buckets, tails and sub-bucket layers
    return torch.nn.Sequential(torch.nn.Linear(10, 37), torch.nn.ReLU(), torch.nn.Linear(37, 5))


def estimator_grads(case: dict, rank: int, simulated: bool = False) -> list[list[torch.Tensor]]:
    """ESTIMATOR_CALLS gradients of g_estim nuq_dist on this rank (or, simulated=True, of g_estim nuq
    with nuq_ngpu=2 fed worker 0's then worker 1's batch, in this process)."""
    import torch.nn.functional as F

    from estim import get_estimator_class
    from trainer.options import full_config
    from trainer.plugins.enabled import EnabledPlugins
    if "plugins" in case:
        import_test_plugins()
    name = "nuq" if simulated else "nuq_dist"
    opts = full_config({**case, "g_estim": name, "nuq_ngpu": 2, "seed": 5})
    batches = [worker_batch(r) for r in range(2)] if simulated else [worker_batch(rank)]
    stream = FixedBatches(batches)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run 1 thread each: the same float sums in the backward pass
    try:
        model = small_model()
        objective = EnabledPlugins(opts).objective(F.cross_entropy, model)  # cross-entropy + plugin terms
        est = get_estimator_class(name)(opts, model, objective, stream, stream)
        return [est.grad()[0] for _ in range(ESTIMATOR_CALLS)]
    finally:
        torch.set_num_threads(threads)


def import_test_plugins() -> None:
    """Declare and register the test-only plugins (tests/plugins_for_tests.py) in this process, once."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    import plugins_for_tests  # noqa: F401


def train_digits(*argv: str) -> None:
    """Train the run of `--config DIR/config.yaml` on this rank exactly as trainer.distributed does, and
    save this rank's final weights and estimator state to DIR/rank<r>.pt (a wrapper around the trainer's
    fit() observes them). $NUQ_TEST_KILL='<rank>:<iteration>' makes that rank SIGKILL itself there;
    $NUQ_TEST_TERM='<rank>:<iteration>' makes it SIGTERM itself (a preemption notice reaching one rank)."""
    import trainer.loop as loop
    from trainer.distributed import train_rank
    import_test_plugins()  # configs may enable the test-only plugins
    out_dir = Path(argv[argv.index("--config") + 1]).parent
    fit, step = loop.Training.fit, loop.Training.step
    victim, _, at = os.environ.get("NUQ_TEST_KILL", "-1:-1").partition(":")
    term_rank, _, term_at = os.environ.get("NUQ_TEST_TERM", "-1:-1").partition(":")

    def fit_and_save(self, resumed):
        try:
            return fit(self, resumed)
        finally:
            torch.save({"model": self.model.state_dict(), "estimator": self.estimator.state_dict(),
                        "iteration": self.progress.iteration}, out_dir / f"rank{dist.get_rank()}.pt")

    def step_or_die(self, it):
        if dist.get_rank() == int(victim) and it == int(at):
            (out_dir / "victim_dies").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        if dist.get_rank() == int(term_rank) and it == int(term_at):
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, it)
    loop.Training.fit, loop.Training.step = fit_and_save, step_or_die
    train_rank(*argv)


HOOK_CASES = {"allreduce": {"ddp_hook": "allreduce"}, "fp16": {"ddp_hook": "fp16"}, "bf16": {"ddp_hook": "bf16"},
              "powersgd_r1": {"ddp_hook": "powersgd", "ddp_powersgd_rank": 1}}
HOOK_CALLS = 3  # PowerSGD compresses from its 2nd step (index 2): the first two are plain all-reduces


def hook_grads(out_dir: str) -> None:
    """HOOK_CALLS gradients of g_estim ddp_hook per HOOK_CASES on this rank, the bytes its all-reduces
    carried in each call, and this rank's own (local) gradient; saved to out_dir/rank<r>.pt."""
    import torch.nn.functional as F

    from estim import get_estimator_class
    from trainer.options import full_config
    init_process_group_from_env(no_cuda=True)
    rank = dist.get_rank()
    torch.set_num_threads(1)
    out = {}
    for name, case in HOOK_CASES.items():
        stream = FixedBatches([worker_batch(rank)])
        est = get_estimator_class("ddp_hook")(full_config({**case, "g_estim": "ddp_hook", "seed": 5}),
                                              small_model(), F.cross_entropy, stream, stream)
        grads, nbytes = [], []
        for _ in range(HOOK_CALLS):
            grads.append(est.grad()[0])
            nbytes.append(est.scalars()["comm/message_bytes"])
        local = est.minibatch_grad(FixedBatches([worker_batch(rank)]))[0]
        out[name] = {"grads": grads, "bytes": nbytes, "local": local}
    torch.save(out, Path(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()

"""`g_estim=ddp_hook`: data-parallel SGD through PyTorch's own `DistributedDataParallel` and one of its
communication hooks (`torch.distributed.algorithms.ddp_comm_hooks`), the baseline a DDP user reaches for.

`ddp_hook` picks the hook (registry `HOOKS`): `allreduce` (DDP's default fp32 all-reduce, `allreduce_hook`), `fp16` /
`bf16` (`fp16_compress_hook` / `bf16_compress_hook`: the gradient bucket cast to 16 bits, all-reduced,
cast back) and `powersgd` (`powerSGD_hook` with `ddp_powersgd_rank`, error feedback and warm start on,
compressing from the 2nd step: torch's `start_powerSGD_iter` minimum). It runs in the same multi-process
setup as `nuq_dist` (launcher.executors.distributed; rank r's data stream is seeded seed + r), so the two compare
on the same model, processes and data.

Wire bytes are counted, not modelled: every `torch.distributed.all_reduce` the hook issues during the
backward pass adds its tensor's size (`count_allreduce_bytes`), which is what each rank contributes to
the all-reduces (as `4 n` is for fp32).

Limits: the hook's state (PowerSGD's error feedback and warm-start matrices) is not checkpointed and
restarts on resume; gradient-variance measurements (estim.gvar) draw gradients through the hook, so
they also feed PowerSGD's error memory (one more stochastic gradient's residual).
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from estim.base import BatchStream, GradientEstimator, LossFn, register_estimator

HookFactory = Callable[[dict[str, Any]], tuple[Any, Callable]]
POWERSGD_START_ITER = 2  # torch's minimum with error feedback / warm start: DDP rebuilds buckets after step 1



def bf16_hook() -> Callable:
    """`bf16_compress_hook`; on CPU its body (`_compress_hook` with bfloat16) under another name, because
    DDP refuses the public hook by name unless CUDA 11+ with NCCL 2.10+ is there, though gloo sums bf16."""
    if torch.cuda.is_available():
        return default_hooks.bf16_compress_hook
    def bf16_compress_hook_on_cpu(process_group: dist.ProcessGroup, bucket: dist.GradBucket) -> torch.futures.Future:
        return default_hooks._compress_hook(torch.bfloat16, process_group, bucket)
    # DDP checks the annotations as objects; this module's are strings (from __future__ import annotations)
    bf16_compress_hook_on_cpu.__annotations__ = dict(default_hooks.bf16_compress_hook.__annotations__)
    return bf16_compress_hook_on_cpu


# DDP's default cap, given explicitly so that it applies to the first bucket too (else 1 MB): models up to
# 25 MB of gradients travel as one bucket. PowerSGD issues its 2nd and 3rd all-reduces from future
# callbacks; with several buckets in flight their order can differ between ranks, which gloo cannot match
# (seen on resnet32 with the default buckets: "Received data size doesn't match expected size").
BUCKET_CAP_MB = 25

HOOKS: dict[str, HookFactory] = {
    # DDP's default fp32 all-reduce, as its Python hook (the built-in C++ one bypasses the byte counter)
    "allreduce": lambda opt: (None, default_hooks.allreduce_hook),
    "fp16": lambda opt: (None, default_hooks.fp16_compress_hook),
    "bf16": lambda opt: (None, bf16_hook()),
    "powersgd": lambda opt: (powerSGD_hook.PowerSGDState(
        process_group=None, matrix_approximation_rank=int(opt["ddp_powersgd_rank"]),
        start_powerSGD_iter=POWERSGD_START_ITER, random_seed=int(opt.get("seed", 1))), powerSGD_hook.powerSGD_hook),
}


def make_hook(opt: dict[str, Any]) -> tuple[Any, Callable]:
    """(state, hook) of `opt['ddp_hook']`, to pass to `DistributedDataParallel.register_comm_hook`."""
    name = opt.get("ddp_hook", "allreduce")
    if name not in HOOKS:
        raise ValueError(f"unknown ddp_hook {name!r}; registered: {', '.join(sorted(HOOKS))}")
    if name == "powersgd" and int(opt.get("ddp_powersgd_rank", 1)) < 1:
        raise ValueError(f"ddp_powersgd_rank must be >= 1, got {opt['ddp_powersgd_rank']!r}")
    return HOOKS[name](opt)


class AllreduceCounter:
    """Bytes and calls of the all-reduces issued while `count_allreduce_bytes` is active."""

    def __init__(self) -> None:
        self.nbytes = 0
        self.calls = 0
        self._lock = threading.Lock()

    def add(self, tensor: torch.Tensor) -> None:
        with self._lock:  # PowerSGD issues its later all-reduces from future callbacks (another thread)
            self.nbytes += tensor.numel() * tensor.element_size()
            self.calls += 1


@contextlib.contextmanager
def count_allreduce_bytes(counter: AllreduceCounter) -> Iterator[AllreduceCounter]:
    """Count every `torch.distributed.all_reduce` call (the hooks look it up on the module at call time)."""
    original = dist.all_reduce

    def counting(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        counter.add(tensor)
        return original(tensor, *args, **kwargs)

    dist.all_reduce = counting
    try:
        yield counter
    finally:
        dist.all_reduce = original


@register_estimator("ddp_hook")
class DDPHookEstimator(GradientEstimator):
    """One rank's gradient averaged by DistributedDataParallel with the configured communication hook."""

    def __init__(self, opt: dict[str, Any], model: torch.nn.Module, loss_fn: LossFn,
                 train_stream: BatchStream, aux_stream: BatchStream) -> None:
        super().__init__(opt, model, loss_fn, train_stream, aux_stream)
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("g_estim=ddp_hook needs torch.distributed: launch the run with --procs-per-run N "
                               "(local) or --nodes/--gpus-per-node (SLURM); for one process use g_estim=sgd")
        self.world = dist.get_world_size()
        state, hook = make_hook(opt)
        # broadcasts rank 0's parameters and buffers
        self.ddp = DistributedDataParallel(model, bucket_cap_mb=BUCKET_CAP_MB)
        self.ddp.register_comm_hook(state, hook)
        self.hook_state = state
        self.counter = AllreduceCounter()
        self.numel = sum(p.numel() for p in self.params())
        self.window_steps, self.window_s = 0, 0.0

    def agree_on_stop(self, pending: bool) -> bool:
        """Any rank's stop flag stops every rank at this step (DDP's ranks must run the same steps)."""
        flag = torch.tensor([1.0 if pending else 0.0], device=self.params()[0].device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0

    def grad(self, stream: BatchStream | None = None) -> tuple[list[torch.Tensor], float]:
        batch = (stream or self.train_stream).next()
        params = self.params()
        for p in params:
            p.grad = None
        loss = self.batch_loss(self.ddp, batch)
        t0 = time.perf_counter()
        with count_allreduce_bytes(self.counter):
            loss.backward()  # DDP waits for every bucket's hook future before it returns
        self.window_s += time.perf_counter() - t0
        self.window_steps += 1
        grads = [p.grad.detach().clone() for p in params]
        for p in params:
            p.grad = None
        return grads, float(loss.detach())

    def scalars(self) -> dict[str, float]:
        """Per step and rank since the last call: all-reduced bytes, bits per coordinate, backward time."""
        out: dict[str, float] = {}
        if self.window_steps:
            nbytes = self.counter.nbytes / self.window_steps
            out = {"comm/message_bytes": nbytes, "comm/bits_per_coord": 8.0 * nbytes / max(self.numel, 1),
                   "bits": 8.0 * nbytes / max(self.numel, 1),
                   "comm/backward_ms": 1e3 * self.window_s / self.window_steps}
        self.counter, self.window_steps, self.window_s = AllreduceCounter(), 0, 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"world": self.world}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("world", self.world)) != self.world:
            raise ValueError(f"the checkpoint was written by {state['world']} ranks, this run has {self.world}; "
                             f"resume with --procs-per-run {state['world']}")

"""`g_estim=nuq_dist`: real data-parallel SGD with quantized gradients on the wire.

Each torch.distributed rank is one worker of the paper's simulated K-worker mode: it computes its own
minibatch gradient (its data stream is seeded seed + rank by the trainer), quantizes it with the run's
method and levels, sends only the encoded message (bit-packed level indices + one float32 norm per
bucket, `nuq.codec`), and averages the W decoded messages (`nuq.exchange`). Every rank ends the step
with the same averaged gradient, bit for bit, so the replicas never drift apart.

Random streams are the simulated mode's (estim/nuq_estimator.py): Philox key `seed`, and the c-th
quantization of the run uses stream positions c*N .. (c+1)*N - 1 (N: the model's parameter count). Rank
k's i-th gradient is quantization c = i*W + k, exactly worker k's in a simulated step with K = W workers.
So, for the same per-worker gradients, the averaged gradient equals the simulated `nuq` estimator's.

Adaptive levels (alq*, amq* with g_optim): rank 0 re-fits on its own sampled gradients at the scheduled
steps and broadcasts the adapter's whole state, so levels (and multiplier) are identical on every rank.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from estim.base import BatchStream, LossFn, register_estimator
from estim.nuq_base import SEED_RANGE, QuantizedEstimator
from nuq import exchange


def worker_stream(seed: int, call: int, worker: int, world: int, numel: int) -> exchange.Stream:
    """The random stream of `worker`'s `call`-th gradient: the simulated mode's quantization call*W + worker."""
    return exchange.Stream(seed=seed % SEED_RANGE, offset=(call * world + worker) * numel)


@register_estimator("nuq_dist")
class NuqDistEstimator(QuantizedEstimator):
    """One rank's quantized gradient, exchanged bit-packed with every other rank and averaged."""

    exchange_name = "allgather"  # see nuq.exchange.EXCHANGES; bench/bench_ddp.py compares them

    def __init__(self, opt: dict[str, Any], model: torch.nn.Module, loss_fn: LossFn,
                 train_stream: BatchStream, aux_stream: BatchStream) -> None:
        super().__init__(opt, model, loss_fn, train_stream, aux_stream)
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("g_estim=nuq_dist needs torch.distributed: launch the run with --procs-per-run N "
                               "(local) or --nodes/--gpus-per-node (SLURM); for one process use g_estim=nuq")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = self.params()[0].device
        self.quant = exchange.Quant(self.levels.to(self.device), self.cfg.bucket_size, self.cfg.norm,
                                    clip=self.cfg.clip)
        self.numel = sum(self.sizes)
        self.segments = exchange.plan_segments(self.sizes, self.cfg.bucket_size, self.cfg.network_wide,
                                               self.cfg.ig_sm_bkts)
        self.window = exchange.ExchangeStats()
        self.window_steps = 0
        self._broadcast_parameters()

    def _broadcast_parameters(self) -> None:
        """Start every replica from rank 0's weights (as DDP does), whatever each rank initialised."""
        with torch.no_grad():
            for p in self.model.parameters():
                dist.broadcast(p.data, src=0)
            for b in self.model.buffers():
                dist.broadcast(b, src=0)

    def agree_on_stop(self, pending: bool) -> bool:
        """Stop every rank at the same step: a SIGTERM/SIGUSR2 seen by any rank is all-reduced here, so the
        trainer loop stops on all ranks together."""
        flag = torch.tensor([1.0 if pending else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0

    # --- levels ------------------------------------------------------------------------------------------

    def on_step(self, step: int) -> None:
        if self.adapter is None:
            return
        ad = self.adapter
        if not ad.schedule.due(step) or step == ad.last_fit_step:  # the same decision on every rank
            return
        if self.rank == 0:
            ad.maybe_refit(step, lambda: self.minibatch_grad(self.aux_stream)[0])
        state = [ad.state_dict() if self.rank == 0 else None]
        dist.broadcast_object_list(state, src=0)
        if self.rank != 0:
            ad.load_state_dict(state[0])
        self.quant.levels = ad.levels.to(self.device)

    # --- the gradient ------------------------------------------------------------------------------------

    def grad(self, stream: BatchStream | None = None) -> tuple[list[torch.Tensor], float]:
        grads, loss = self.minibatch_grad(stream or self.train_stream)
        flat = torch.cat([g.reshape(-1) for g in grads]).to(torch.float32)
        mean, stats = self.average(flat)
        out, pos = [], 0
        for g in grads:
            out.append(mean[pos:pos + g.numel()].view_as(g).to(g.dtype))
            pos += g.numel()
        return out, loss

    def average(self, flat: torch.Tensor) -> tuple[torch.Tensor, exchange.ExchangeStats]:
        """The mean over ranks of every rank's quantized `flat` (full precision for nuq_method none)."""
        if not self.method.quantizes:
            mean, stats = self._allreduce_fp32(flat)
        else:
            stream = worker_stream(self.key, self.calls, self.rank, self.world, self.numel)
            mean, stats = exchange.get_exchange(self.exchange_name)(flat, self.quant, stream, self.segments)
        self.calls += 1
        self.window.add(stats)
        self.window_steps += 1
        return mean, stats

    def _allreduce_fp32(self, flat: torch.Tensor) -> tuple[torch.Tensor, exchange.ExchangeStats]:
        t0 = time.perf_counter()
        total = flat.clone()
        dist.all_reduce(total)
        if total.device.type == "cuda":
            torch.cuda.synchronize(total.device)
        nbytes = 4 * flat.numel()
        return total / self.world, exchange.ExchangeStats(message_bytes=nbytes, bytes_sent=(self.world - 1) * nbytes,
                                                          comm_s=time.perf_counter() - t0)

    # --- metrics and checkpoints -------------------------------------------------------------------------

    def scalars(self) -> dict[str, float]:
        """The shared ones (bits, levels) and, per step and rank averaged since the last call: wire bytes,
        bits per coordinate, timings."""
        out = super().scalars()
        steps = max(self.window_steps, 1)
        w = self.window
        if self.window_steps:
            out.update({
                "comm/message_bytes": w.message_bytes / steps,
                "comm/bytes_sent": w.bytes_sent / steps,
                "comm/bits_per_coord": 8.0 * w.message_bytes / steps / max(self.numel, 1),
                "comm/encode_ms": 1e3 * w.encode_s / steps,
                "comm/comm_ms": 1e3 * w.comm_s / steps,
                "comm/decode_ms": 1e3 * w.decode_s / steps,
            })
        self.window, self.window_steps = exchange.ExchangeStats(), 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "world": self.world}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("world", self.world)) != self.world:
            raise ValueError(f"the checkpoint was written by {state['world']} ranks, this run has {self.world}; "
                             f"resume with --procs-per-run {state['world']}")
        super().load_state_dict(state)
        self.quant.levels = self.levels.to(self.device)

"""`g_estim=nuq`: simulated data-parallel SGD with quantized gradients, as in the paper.

Each step draws `nuq_ngpu` = K minibatches (one per simulated worker), quantizes each worker's gradient
independently (nuq/quantizer.py: bucketing, tail and clip policy; nuq/kernel.py: the kernel), and averages
the K dequantized gradients. Method `none` averages the K full-precision gradients ("SuperSGD").

Random numbers: the Philox key is the run's `seed`; quantization number c (counted over the whole run, in
`state_dict`) uses stream positions c*N .. (c+1)*N - 1 where N is the model's parameter count. So no two
quantizations share a random number, a run repeats exactly for its seed, and a resumed run continues the
same sequence.

Adaptive methods (alq*, alqg*, amq*) with `g_optim` set re-fit their levels on schedule through
`nuq.adaptive.LevelAdapter`, sampling gradients from `aux_stream`; without `g_optim` they keep their
initial (exponential) levels.
"""
from __future__ import annotations

from typing import Any

import torch

from estim.base import BatchStream, LossFn, register_estimator
from estim.nuq_base import QuantizedEstimator
from nuq.quantizer import positions_used, quantize_grads


@register_estimator("nuq")
class NUQEstimator(QuantizedEstimator):
    """Average of `nuq_ngpu` independently quantized minibatch gradients."""

    def __init__(self, opt: dict[str, Any], model: torch.nn.Module, loss_fn: LossFn,
                 train_stream: BatchStream, aux_stream: BatchStream) -> None:
        super().__init__(opt, model, loss_fn, train_stream, aux_stream)
        self.workers = opt.get("nuq_ngpu", 1)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"nuq_ngpu (simulated workers) must be an int >= 1, got {self.workers!r}")

    def quantize(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """One worker's quantized gradient, on fresh stream positions."""
        n = positions_used(grads)
        out = quantize_grads(grads, self.levels, self.cfg, self.key, self.calls * n)
        self.calls += 1
        return out

    def grad(self, stream: BatchStream | None = None) -> tuple[list[torch.Tensor], float]:
        stream = stream or self.train_stream
        total: list[torch.Tensor] = []
        loss_sum = 0.0
        for _ in range(self.workers):
            grads, loss = self.minibatch_grad(stream)
            q = self.quantize(grads)
            total = q if not total else [t + g for t, g in zip(total, q)]
            loss_sum += loss
        return [t / self.workers for t in total], loss_sum / self.workers

    def on_step(self, step: int) -> None:
        if self.adapter is not None:
            self.adapter.maybe_refit(step, lambda: self.minibatch_grad(self.aux_stream)[0])

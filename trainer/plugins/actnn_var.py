"""The study's gradient-variance protocol ("Overall Var", ActNN's get_var).

Pass 1, compression off, gradient scales updating: the exact gradient g of every batch (this fills the
per-sample scales of its samples, as the study's pass 1). Then the scales are frozen and, under per-layer
allocation, one compressed backward on the first batch feeds the per-layer allocation. For each batch,
`draws` compressed backward passes g_1..g_k with fresh stochastic rounding; per weight element var =
population variance of g_1..g_k, bias = (mean_k g_k - g)^2. Overall Var and Bias = sums over the weights
of every conv/linear layer, averaged over the batches; SampleVar = sum of the minibatch-sampling variance
of g about its mean over the batches. The model (BN running statistics included), the compressors' state
and torch's random state are restored afterwards, so the measurement does not change the run that
follows it.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]  # inputs, targets, dataset indices (or None)


class Compression(Protocol):
    """What the protocol switches on the model's compressed layers (the actnn plugin)."""

    perlayer: bool  # bits re-divided across layers (allocate_perlayer) from the last compressed forward

    def set_compression(self, on: bool) -> None: ...

    def update_scales(self, on: bool) -> None: ...

    def begin_batch(self, index: torch.Tensor | None) -> None: ...

    def allocate_perlayer(self) -> None: ...

    def layer_state(self) -> list[dict[str, Any]]: ...

    def load_layer_state(self, layers: list[dict[str, Any]]) -> None: ...


def measure(model: nn.Module, batches: Sequence[Batch], weights: list[nn.Parameter], compression: Compression,
            draws: int = 3,
            loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
            ) -> dict[str, float]:
    """{'var', 'bias', 'sample_var'} of the compressed weight gradients over `batches`."""
    if draws < 2 or not batches:
        raise ValueError(f"the variance protocol needs >= 2 draws and >= 1 batch, got {draws} and {len(batches)}")
    saved, layers = copy.deepcopy(model.state_dict()), compression.layer_state()
    was_training = model.training
    model.train()

    def grad(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        compression.begin_batch(index)
        gs = torch.autograd.grad(loss_fn(model(x), y), weights)
        return torch.cat([g.reshape(-1) for g in gs])

    var = bias = 0.0
    with torch.random.fork_rng(devices=[]):
        try:
            compression.set_compression(False)
            exact = [grad(*b) for b in batches]  # also fills the scales of these samples
            compression.update_scales(False)
            compression.set_compression(True)
            if compression.perlayer:
                grad(*batches[0])
                compression.allocate_perlayer()
            for b, g in zip(batches, exact):
                draws_g = torch.stack([grad(*b) for _ in range(draws)])
                var += float(draws_g.var(0, unbiased=False).sum())
                bias += float((draws_g.mean(0) - g).square().sum())
        finally:
            compression.set_compression(True)
            compression.update_scales(True)
            compression.begin_batch(None)
            compression.load_layer_state(layers)
            model.load_state_dict(saved)
            model.train(was_training)
    exact_t = torch.stack(exact)
    sample_var = float((exact_t - exact_t.mean(0)).square().mean(0).sum())
    n = len(batches)
    return {"var": var / n, "bias": bias / n, "sample_var": sample_var}

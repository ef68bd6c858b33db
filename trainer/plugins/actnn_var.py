"""The study's gradient-variance protocol ("Overall Var", ActNN's get_var).

For each batch: the exact gradient g (compression off), then `draws` compressed backward passes g_1..g_k
with fresh stochastic rounding. Per weight element: var = population variance of g_1..g_k, bias =
(mean_k g_k - g)^2. Overall Var and Bias = sums over the weights of every conv/linear layer, averaged over
the batches; SampleVar = sum of the minibatch-sampling variance of g about its mean over the batches.
The model (BN running statistics included) and torch's random state are restored afterwards, so the
measurement does not change the run that follows it.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


def measure(model: nn.Module, batches: Sequence[Batch], weights: list[nn.Parameter],
            set_compression: Callable[[bool], None], draws: int = 3,
            loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
            ) -> dict[str, float]:
    """{'var', 'bias', 'sample_var'} of the compressed weight gradients over `batches`."""
    if draws < 2 or not batches:
        raise ValueError(f"the variance protocol needs >= 2 draws and >= 1 batch, got {draws} and {len(batches)}")
    saved = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.train()

    def grad(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gs = torch.autograd.grad(loss_fn(model(x), y), weights)
        return torch.cat([g.reshape(-1) for g in gs])

    var = bias = 0.0
    exact = []
    with torch.random.fork_rng(devices=[]):
        try:
            for x, y in batches:
                set_compression(False)
                g = grad(x, y)
                set_compression(True)
                draws_g = torch.stack([grad(x, y) for _ in range(draws)])
                mean = draws_g.mean(0)
                var += float(draws_g.var(0, unbiased=False).sum())
                bias += float((mean - g).square().sum())
                exact.append(g)
        finally:
            set_compression(True)
            model.load_state_dict(saved)
            model.train(was_training)
    exact_t = torch.stack(exact)
    sample_var = float((exact_t - exact_t.mean(0)).square().mean(0).sum())
    n = len(batches)
    return {"var": var / n, "bias": bias / n, "sample_var": sample_var}

"""The statistics of unbiased stochastic rounding between neighbouring levels, shared by the tests of nuq's
group codec (test_groupquant.py) and of the actnn plugin (test_actnn.py)."""
from __future__ import annotations

import torch


def assert_two_point_rounding(out: torch.Tensor, x: torch.Tensor, lower: torch.Tensor, step: torch.Tensor) -> None:
    """`out` (draws, *x.shape): draws of x rounded to lower or lower + step with P(up) = (x - lower) / step.
    Checks the mean (unbiased) and the variance (x - l)(u - x) of every element against CLT bounds."""
    draws = out.shape[0]
    expected_var = ((x - lower) * (lower + step - x)).clamp(min=0)  # >= 0 also after float rounding
    # the sample variance of a two-point variable step*Bernoulli(p) has standard error
    # step^2 sqrt((mu4 - sigma^4) / K), mu4 = p(1-p)(1-3p+3p^2), sigma^2 = p(1-p); that vanishes at
    # p = 1/2, where the second-order term step^2 (p_hat - p)^2 <= 25 step^2 p(1-p) / K remains
    p = ((x - lower) / step).clamp(0, 1)
    se = step ** 2 * ((p * (1 - p) * (1 - 3 * p + 3 * p ** 2) - (p * (1 - p)) ** 2).clamp(min=0) / draws).sqrt()
    second = 25 * expected_var / draws
    assert bool(((out.var(0) - expected_var).abs() <= 5 * se + second + 1e-5 * step ** 2).all())
    # CLT: the mean of the draws is within 5 standard errors of x, for every element; plus 3 hits of
    # step / draws for elements a hair above a level (p ~ 1e-4: a binomial count far from normal)
    err = (out.mean(0) - x).abs()
    assert bool((err <= 5 * (expected_var / draws).sqrt() + 3 * step / draws + 1e-5).all()), float(err.max())

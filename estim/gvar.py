"""Gradient-variance measurement: the paper's main diagnostic curves.

`measure_variance(estimator, n)` draws n plain minibatch gradients g_1..g_n and n gradients of the
estimator e_1..e_n, all from the estimator's `aux_stream` (so training data order is undisturbed), and
returns (norms are over the whole flattened gradient of all parameters):

* sgd_var  = 1/(n-1) sum ||g_i - g||^2, g the mean of the g_i: unbiased estimate of E||g_i - E g_i||^2,
  the total variance of one minibatch gradient;
* est_var  = 1/(n-1) sum ||e_i - e||^2, e the mean of the e_i: the same for the estimator (with K simulated
  workers it includes the 1/K averaging, plus quantization noise);
* sgd_nvar = sgd_var / ||g||^2 and est_nvar = est_var / ||g||^2: normalised variance, divided by the squared
  norm of the mean (SGD) gradient as in the paper;
* est_snr  = ||e|| / sqrt(est_var): the estimator's signal-to-noise ratio (inf when est_var is 0);
* grad_bias = ||e - g||^2: distance of the two means. For an unbiased estimator its expectation is
  (est_var + sgd_var) / n, so it measures bias only above that floor.

Sums are kept in float64 with one pass per sample (no n copies of the gradient). Drawing from the
estimator advances its random-offset counter; that is deterministic, so runs still repeat exactly.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from estim.base import GradientEstimator


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1).double() for g in grads])


def _moments(draw: Callable[[], list[torch.Tensor]], n: int) -> tuple[torch.Tensor, float]:
    """(mean vector, unbiased total variance) of n draws, by running sums in float64."""
    s1: torch.Tensor | None = None
    s2 = 0.0
    for _ in range(n):
        v = _flat(draw())
        s1 = v.clone() if s1 is None else s1.add_(v)
        s2 += float(v.dot(v))
    mean = s1 / n
    var = max(0.0, (s2 - n * float(mean.dot(mean))) / (n - 1))
    return mean, var


def measure_variance(estimator: GradientEstimator, n_samples: int) -> dict[str, float]:
    """est_var, sgd_var, est_nvar, sgd_nvar, est_snr, grad_bias of `estimator` (see the module docstring)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"gvar_estim_iter (samples per variance measurement) must be an int >= 2, got {n_samples!r}")
    aux = estimator.aux_stream
    g_mean, sgd_var = _moments(lambda: estimator.minibatch_grad(aux)[0], n_samples)
    e_mean, est_var = _moments(lambda: estimator.grad(aux)[0], n_samples)
    g_sq = float(g_mean.dot(g_mean))
    e_norm = math.sqrt(float(e_mean.dot(e_mean)))
    return {
        "est_var": est_var,
        "sgd_var": sgd_var,
        "est_nvar": est_var / g_sq if g_sq > 0 else math.inf,
        "sgd_nvar": sgd_var / g_sq if g_sq > 0 else math.inf,
        "est_snr": e_norm / math.sqrt(est_var) if est_var > 0 else math.inf,
        "grad_bias": float((e_mean - g_mean).square().sum()),
    }

"""AMQ: exponential levels +-p^j with the multiplier p fitted by gradient descent (the paper's AMQ).

dV/dp = sum_j dV/dl_j * dl_j/dp with dl_j/dp = sign_j k_j p^(k_j - 1) for l_j = sign_j p^(k_j): the
exact derivative of the same closed-form variance the fit is judged by. All starting points (0.1 .. 0.9
and the previous best) descend together; the lowest-variance multiplier among all ends and all starts
wins, so the fit never ends above its best start. p stays inside [0.01, 0.99] so levels stay ordered.
"""
from __future__ import annotations

import numpy as np

from estim.dists import Distribution
from nuq.fit_base import FitOptions, level_derivatives, register_fitter, total_variance
from nuq.levels import exponential_levels

START_POINTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
P_RANGE = (0.01, 0.99)


class ExponentialFamily:
    """The level sets of `nuq.levels.exponential_levels(bits, p)` as sign * p^exponent, vectorised in p."""

    def __init__(self, bits: int) -> None:
        ref = exponential_levels(bits, 0.5).double().numpy()
        self.sign = np.sign(ref)
        self.exponent = np.round(-np.log2(np.abs(ref)))
        check = exponential_levels(bits, 0.3).double().numpy()
        if not np.allclose(self.levels(np.array([0.3]))[0], check, atol=1e-6):
            raise RuntimeError("nuq.levels.exponential_levels is no longer of the form +-p^j; "
                               "update nuq/fit_amq.py's ExponentialFamily")

    def levels(self, p: np.ndarray) -> np.ndarray:
        return self.sign * p[:, None] ** self.exponent

    def derivative(self, p: np.ndarray) -> np.ndarray:
        k = self.exponent
        return self.sign * k * p[:, None] ** np.maximum(k - 1.0, 0.0)


def fit_amq(dist: Distribution, bits: int, opts: FitOptions) -> tuple[np.ndarray, float, float]:
    family = ExponentialFamily(bits)
    starts = list(START_POINTS)
    if opts.previous_multiplier is not None:
        starts.append(float(np.clip(opts.previous_multiplier, *P_RANGE)))
    p0 = np.array(starts)
    p = p0.copy()
    for _ in range(opts.amq_epochs):
        _, _, g, _ = level_derivatives(dist, family.levels(p))
        grad = (g * family.derivative(p)).sum(axis=1)
        p = np.minimum(np.maximum(p - opts.amq_lr * grad, P_RANGE[0]), P_RANGE[1])
    candidates = np.concatenate([p, p0])
    var = total_variance(dist, family.levels(candidates))
    i = int(np.argmin(var))
    return family.levels(candidates[i:i + 1])[0], float(var[i]), float(candidates[i])


register_fitter("amq", norm_based=False)(fit_amq)
register_fitter("amq_nb", norm_based=True)(fit_amq)

"""AMQ: exponential levels +-p^j with the multiplier p fitted by gradient descent (the paper's AMQ).

dV/dp = sum_j dV/dl_j * dl_j/dp with dl_j/dp = sign_j k_j p^(k_j - 1) for l_j = sign_j p^(k_j): the
exact derivative of the same closed-form variance the fit is judged by. All starting points (0.1 .. 0.9
and the previous best) descend together. Each start's step size begins at `nuq_amq_lr`, doubles after
a step that lowers the variance and halves after one that would raise it (that step is not taken):
dV/dp spans orders of magnitude with bits and sigma, so a fixed 0.7 oscillates at 2 bits on narrow
distributions and crawls at 4+ bits. The lowest-variance multiplier of all starts' descents wins, so the fit
never ends above its best start. p stays inside [0.01, 0.99] so levels stay ordered.
"""
from __future__ import annotations

import numpy as np

from nuq.dists import Distribution
from nuq.fit_base import FitOptions, level_derivatives, register_fitter
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
    lr = np.full(p0.size, float(opts.amq_lr))
    best_p, best_v, best_g = p0, None, None
    trial = p0
    for _ in range(opts.amq_epochs + 1):
        v, _, g, _ = level_derivatives(dist, family.levels(trial))
        var, grad = v.sum(axis=1), (g * family.derivative(trial)).sum(axis=1)
        if best_v is None:
            best_v, best_g = var, grad
        else:
            # a step that raised the variance overshot: stay and halve; one that lowered it: double
            ok = var <= best_v
            best_p, best_v, best_g = (np.where(ok, trial, best_p), np.where(ok, var, best_v),
                                      np.where(ok, grad, best_g))
            lr = np.where(ok, lr * 2.0, lr / 2.0)
        trial = np.minimum(np.maximum(best_p - lr * best_g, P_RANGE[0]), P_RANGE[1])
    i = int(np.argmin(best_v))  # each start's best_v is at most its starting variance
    return family.levels(best_p[i:i + 1])[0], float(best_v[i]), float(best_p[i])


register_fitter("amq", norm_based=False)(fit_amq)
register_fitter("amq_nb", norm_based=True)(fit_amq)

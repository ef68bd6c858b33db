"""ALQG: the gradient-descent variant of ALQ, every level moved at once (the paper's ALQ-G).

Each epoch takes one projected gradient step on all free levels: the gradient scaled by the inverse of
each level's own curvature (levels in the sparse tails have tiny gradients and tiny curvature alike, so
one step size fits all), and each step limited to half the distance to the nearer neighbour, so the
levels stay sorted. The step is halved (up to 5 times) until the total variance drops; otherwise the
levels stay, so a fit never ends above its start.
"""
from __future__ import annotations

import numpy as np

from nuq.dists import Distribution
from nuq.fit_base import (FitOptions, LevelSpace, best_row, level_derivatives, register_fitter,
                          start_levels, theta_derivatives, total_variance)

BACKTRACK = np.array([1.0, 0.5, 0.25, 0.125, 0.0625])


def gradient_descent(dist: Distribution, space: LevelSpace, starts: np.ndarray, epochs: int
                     ) -> np.ndarray:
    theta = space.theta(starts)
    if space.P == 0:
        return starts
    nb, ns = theta.shape[0], BACKTRACK.size
    for _ in range(epochs):
        v, m0, g, h = level_derivatives(dist, space.levels(theta))
        gt, ht = theta_derivatives(space, g, h, m0)
        lo, hi = space.bounds(theta)
        limit = 0.5 * np.minimum(theta - lo, hi - theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(ht > 0, -gt / ht, -np.sign(gt) * np.inf)
        step = np.minimum(np.maximum(np.nan_to_num(step, nan=0.0), -limit), limit)
        # all step sizes of all starts in one batch: rows [size0 x starts, size1 x starts, ...]
        trial = (theta[None] + BACKTRACK[:, None, None] * step[None]).reshape(ns * nb, -1)
        var = total_variance(dist, space.levels(trial)).reshape(ns, nb)
        current = v.sum(axis=1)
        better = var < current[None]
        first = np.argmax(better, axis=0)  # the largest step that improves
        take = better[first, np.arange(nb)]
        chosen = trial.reshape(ns, nb, -1)[first, np.arange(nb)]
        theta = np.where(take[:, None], chosen, theta)
    return space.levels(theta)


def fit_alqg(dist: Distribution, bits: int, opts: FitOptions) -> tuple[np.ndarray, float, None]:
    starts = start_levels(dist, bits, opts.sym, opts.previous_levels)
    space = LevelSpace(starts.shape[1], opts.sym)
    fitted = gradient_descent(dist, space, starts, opts.cd_epochs)
    levels, var = best_row(dist, np.concatenate([fitted, starts]))
    return levels, var, None


register_fitter("alqg", norm_based=False)(fit_alqg)
register_fitter("alqg_nb", norm_based=True)(fit_alqg)

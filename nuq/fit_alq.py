"""ALQ: coordinate descent over the levels (the paper's Algorithm 1), on all starts at once.

Each sweep moves every free level to the minimiser of the variance of the intervals it touches, with
its neighbours fixed. Levels two apart touch disjoint intervals, so a sweep is two vectorised half-steps
(even-indexed, then odd-indexed levels): the same fixed points as a left-to-right sweep.
The move goes towards the minimiser found either numerically (a safeguarded Newton step on the convex
one-level objective, the default) or with `nuq_inv`'s closed form
l = ppf(cdf(b) - int_a^b (r - a) f dr / (b - a)), which is where that objective's derivative vanishes.
The full move and two damped ones are tried at once and a level only moves if its variance drops, so a
fit never ends above its start. Sweeps stop early once they no longer lower the variance.
"""
from __future__ import annotations

import numpy as np

from nuq.dists import Distribution
from nuq.fit_base import (FitOptions, LevelSpace, best_row, level_derivatives, register_fitter,
                          start_levels, theta_derivatives)

# each candidate move is also tried at 1/4 and 1/16 of its length; the best of these and "stay" wins
DAMPING = np.array([1.0, 0.25, 0.0625])
_FACTORS = np.concatenate([[0.0], DAMPING])  # step factor of each option, "stay" first
# stop when a sweep lowers no start's variance by more than this fraction: a fixed point
CONVERGED = 1e-12


def _newton_target(space: LevelSpace, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, g: np.ndarray,
                   h: np.ndarray, m0: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """One safeguarded Newton step towards the root of dV/dtheta (bisection where Newton leaves the
    bracket that the derivative's sign gives)."""
    gt, ht = theta_derivatives(space, g, h, m0)
    gt, ht = gt[:, cols], ht[:, cols]
    hi = np.where(gt > 0, x, hi)
    lo = np.where(gt <= 0, x, lo)
    pos = ht > 0
    newton = x - np.divide(gt, ht, out=np.zeros_like(gt), where=pos)
    ok = pos & (newton >= lo) & (newton <= hi)
    return np.where(ok, newton, (lo + hi) / 2.0)


def _inverse_target(dist: Distribution, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The closed form l = ppf(cdf(b) - int_a^b (r - a) f dr / (b - a)) between neighbours a, b."""
    _, p1, _ = dist.interval_moments(lo, hi)
    width = hi - lo
    target = dist.cdf(hi) - np.divide(p1, width, out=np.zeros_like(p1), where=width > 0)
    x = dist.ppf(np.minimum(np.maximum(target, 0.0), 1.0))
    return np.minimum(np.maximum(x, lo), hi)


def _color_step(dist: Distribution, sym_dist: Distribution | None, space: LevelSpace, theta: np.ndarray,
                cols: np.ndarray, inv: bool) -> np.ndarray:
    """Move the parameters `cols` (others fixed) towards their minimisers, each only if its variance
    drops; returns the total variance of every start before the move."""
    levels = space.levels(theta)
    v, m0, g, h = level_derivatives(dist, levels)
    x = theta[:, cols]
    lo, hi = (b[:, cols] for b in space.bounds(theta))
    if inv:
        # under nuq_sym a pair (theta, -theta) has the same closed form on the symmetrised density;
        # the innermost pair of an even set shares an interval, has no closed form, and takes Newton
        target = _inverse_target(sym_dist if space.sym else dist, lo, hi)
        if space.shared_center and cols[0] == 0:
            target[:, 0] = _newton_target(space, x, lo, hi, g, h, m0, cols)[:, 0]
    else:
        target = _newton_target(space, x, lo, hi, g, h, m0, cols)
    # the damped moves of all starts as one batch of level sets: [damping x starts, n]
    step = target - x
    moves = DAMPING[:, None, None] * step[None]
    trial = (levels[None] + moves @ space.lift[cols]).reshape(-1, space.n)
    touch = space.touch[cols].T
    f_trial = (dist.interval_variance(trial[:, :-1], trial[:, 1:]) @ touch).reshape(DAMPING.size, *x.shape)
    # option 0 = stay; argmin takes the first of equal values, so a move must strictly lower the variance
    pick = np.argmin(np.concatenate([(v @ touch)[None], f_trial]), axis=0)
    theta[:, cols] = x + _FACTORS[pick] * step
    return v.sum(axis=1)


def coordinate_descent(dist: Distribution, space: LevelSpace, starts: np.ndarray, opts: FitOptions
                       ) -> np.ndarray:
    """Up to `opts.cd_epochs` sweeps from each row of `starts`; returns the final level sets."""
    theta = space.theta(starts)
    if space.P == 0:
        return starts.copy()
    sym_dist = dist.symmetrized() if (opts.inv and space.sym) else None
    previous = None
    for _ in range(opts.cd_epochs):
        entry = None
        for cols in space.colors:
            if cols.size:
                var = _color_step(dist, sym_dist, space, theta, cols, opts.inv)
                entry = var if entry is None else entry
        if previous is not None and np.all(previous - entry <= CONVERGED * previous):
            break
        previous = entry
    return space.levels(theta)


def fit_alq(dist: Distribution, bits: int, opts: FitOptions) -> tuple[np.ndarray, float, None]:
    starts = start_levels(dist, bits, opts.sym, opts.previous_levels)
    space = LevelSpace(starts.shape[1], opts.sym)
    fitted = coordinate_descent(dist, space, starts, opts)
    levels, var = best_row(dist, np.concatenate([fitted, starts]))
    return levels, var, None


register_fitter("alq", norm_based=False)(fit_alq)
register_fitter("alq_nb", norm_based=True)(fit_alq)

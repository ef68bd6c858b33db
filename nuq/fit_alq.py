"""ALQ: coordinate descent over the levels (the paper's Algorithm 1), on all starts at once.

Each sweep moves every free level to the minimiser of the variance of the intervals it touches, with
its neighbours fixed. Levels two apart touch disjoint intervals, so a sweep is two vectorised half-steps
(even-indexed, then odd-indexed levels): the same fixed points as a left-to-right sweep.
The minimiser is found either numerically (safeguarded Newton on the convex one-level objective, the
default) or with `nuq_inv`'s closed form l = ppf(cdf(b) - int_a^b (r - a) f dr / (b - a)), which is
where that objective's derivative vanishes. A move is kept only if it lowers the variance, so a fit
never ends above its start.
"""
from __future__ import annotations

import numpy as np

from estim.dists import Distribution
from nuq.fit_base import (FitOptions, LevelSpace, best_row, level_derivatives, register_fitter,
                          start_levels, theta_derivatives)

NEWTON_STEPS = 2  # per level and sweep; sweeps repeat, so the warm-started root converges quickly
# a sweep that moves no level by more than this fraction of its bracket is a fixed point: stop there
CONVERGED = 1e-7


def _local_objective(space: LevelSpace, v: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Variance of the intervals each parameter in `cols` touches, [B, len(cols)]."""
    return v @ space.touch[cols].T


def _newton_block(dist: Distribution, space: LevelSpace, theta: np.ndarray, cols: np.ndarray
                  ) -> np.ndarray:
    """Candidate minimisers of the parameters `cols` (others fixed), best iterate of each kept."""
    lo, hi = (x[:, cols] for x in space.bounds(theta))
    work = theta.copy()
    best_x = theta[:, cols].copy()
    best_f = None
    for step in range(NEWTON_STEPS + 1):
        v, m0, g, h = level_derivatives(dist, space.levels(work))
        f = _local_objective(space, v, cols)
        x = work[:, cols]
        if best_f is None:
            best_f = f
        else:
            better = f < best_f
            best_x = np.where(better, x, best_x)
            best_f = np.where(better, f, best_f)
        if step == NEWTON_STEPS:
            break
        gt, ht = theta_derivatives(space, g, h, m0)
        gt, ht = gt[:, cols], ht[:, cols]
        # the root lies left of x where the derivative is positive: shrink the bracket to it
        hi = np.where(gt > 0, x, hi)
        lo = np.where(gt <= 0, x, lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = x - gt / ht
        ok = (ht > 0) & (newton > lo) & (newton < hi)
        work[:, cols] = np.where(ok, newton, (lo + hi) / 2.0)
    return best_x


def _inverse_block(dist: Distribution, sym_dist: Distribution | None, space: LevelSpace,
                   theta: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Closed-form minimisers l = ppf(cdf(b) - int_a^b (r - a) f / (b - a)) for the parameters `cols`.

    Under `nuq_sym` a pair (theta, -theta) minimises the same formula on the symmetrised density; the
    innermost pair of an even set shares an interval, has no such form and takes Newton steps."""
    lo, hi = (x[:, cols] for x in space.bounds(theta))
    d = sym_dist if space.sym else dist
    _, p1, _ = d.interval_moments(lo, hi)
    width = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        target = d.cdf(hi) - np.where(width > 0, p1 / width, 0.0)
    x = np.minimum(np.maximum(d.ppf(np.minimum(np.maximum(target, 0.0), 1.0)), lo), hi)
    if space.shared_center and cols.size and cols[0] == 0:
        x[:, 0] = _newton_block(dist, space, theta, cols)[:, 0]
    return x


def coordinate_descent(dist: Distribution, space: LevelSpace, starts: np.ndarray, opts: FitOptions
                       ) -> np.ndarray:
    """Run `opts.cd_epochs` sweeps from each row of `starts`; returns the final level sets."""
    theta = space.theta(starts)
    sym_dist = dist.symmetrized() if (opts.inv and space.sym) else None
    for _ in range(opts.cd_epochs):
        before = theta.copy()
        for cols in space.colors:
            if cols.size == 0:
                continue
            if not opts.inv:  # Newton keeps its best iterate: never worse than where it started
                theta[:, cols] = _newton_block(dist, space, theta, cols)
                continue
            cand = _inverse_block(dist, sym_dist, space, theta, cols)
            trial = theta.copy()
            trial[:, cols] = cand
            old = _local_objective(space, level_derivatives(dist, space.levels(theta))[0], cols)
            new = _local_objective(space, level_derivatives(dist, space.levels(trial))[0], cols)
            theta[:, cols] = np.where(new < old, cand, theta[:, cols])
        lo, hi = space.bounds(before)
        if np.all(np.abs(theta - before) <= CONVERGED * (hi - lo)):
            break
    return space.levels(theta)


def fit_alq(dist: Distribution, bits: int, opts: FitOptions) -> tuple[np.ndarray, float, None]:
    starts = start_levels(dist, bits, opts.sym, opts.previous_levels)
    space = LevelSpace(starts.shape[1], opts.sym)
    fitted = coordinate_descent(dist, space, starts, opts)
    levels, var = best_row(dist, np.concatenate([fitted, starts]))
    return levels, var, None


register_fitter("alq", norm_based=False)(fit_alq)
register_fitter("alq_nb", norm_based=True)(fit_alq)

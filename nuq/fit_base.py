"""Shared pieces of the adaptive level fits: options, result, the fitter registry and the level space.

A level set l_0 = -1 < l_1 < ... < l_{n-1} = 1 is moved through its free parameters theta: the interior
levels, or under `nuq_sym` the positive levels (each also moving its mirror -theta). Every fit works
on a batch of starts at once (rows), so the Python overhead is paid once per step, not per start.

Derivatives of V = sum_j int_{l_j}^{l_{j+1}} (r - l_j)(l_{j+1} - r) f(r) dr, from partial moments:
  dV/dl_j       = int_{l_{j-1}}^{l_j} (r - l_{j-1}) f  -  int_{l_j}^{l_{j+1}} (l_{j+1} - r) f
  d2V/dl_j2     = (l_{j+1} - l_{j-1}) f(l_j)
  d2V/dl_j dl_{j+1} = -int_{l_j}^{l_{j+1}} f
so V is convex in each level (its derivative grows with it): a coordinate step has one minimiser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from nuq.dists import Distribution
from nuq.levels import exponential_levels, uniform_levels
from nuq.names import ADAPTIVE
from nuq.registry import Registry


@dataclass(frozen=True)
class FitOptions:
    """The fit options of the trainer's schema (`nuq_*`), plus the previous fit to warm-start from."""

    cd_epochs: int = 30
    amq_lr: float = 0.7
    amq_epochs: int = 50
    sym: bool = False
    inv: bool = False
    previous_levels: np.ndarray | None = None
    previous_multiplier: float | None = None


@dataclass
class FitResult:
    """Fitted levels (float32, sorted, ending at -1 and 1), their estimated variance, and AMQ's p."""

    levels: torch.Tensor
    variance: float
    multiplier: float | None = None


# A fitter gets the model of the coordinates, bits, and options; returns (levels, variance, multiplier).
Fitter = Callable[[Distribution, int, FitOptions], tuple[np.ndarray, float, float | None]]


@dataclass(frozen=True)
class FitMethod:
    fit: Fitter
    norm_based: bool  # True: fit the norm-weighted histogram; False: the pooled truncated normal


FITTERS = Registry("adaptive method", ADAPTIVE, "nuq/names.py ADAPTIVE")


def register_fitter(name: str, norm_based: bool) -> Callable[[Fitter], Fitter]:
    """Register the fit of adaptive method `name` (taken once; it must be in nuq/names.py ADAPTIVE)."""
    def wrap(fn: Fitter) -> Fitter:
        FITTERS.add(name, FitMethod(fn, norm_based))
        return fn
    return wrap


def start_levels(dist: Distribution, bits: int, sym: bool, previous: np.ndarray | None) -> np.ndarray:
    """The starts of ALQ/ALQG: quantiles of the fitted model, uniform, exponential(0.5), and the
    previous levels when given (rows of a [starts, n] array)."""
    uni = uniform_levels(bits).double().numpy()
    n = uni.size
    quant = dist.ppf(np.linspace(0.0, 1.0, n))
    quant[0], quant[-1] = -1.0, 1.0
    rows = [np.sort(quant), uni, exponential_levels(bits, 0.5).double().numpy()]
    if previous is not None:
        if np.asarray(previous).size != n:
            raise ValueError(f"previous levels have {np.asarray(previous).size} values; {bits} bits "
                             f"need {n}")
        rows.append(np.sort(np.asarray(previous, dtype=np.float64).ravel()))
    starts = np.stack(rows)
    if sym:
        starts = (starts - starts[:, ::-1]) / 2.0
    starts[:, 0], starts[:, -1] = -1.0, 1.0
    return np.maximum.accumulate(np.clip(starts, -1.0, 1.0), axis=1)


class LevelSpace:
    """Maps free parameters theta [B, P] to level sets [B, n] and back, with the derivative chain."""

    def __init__(self, n: int, sym: bool) -> None:
        if n < 2:
            raise ValueError(f"a level set needs at least 2 levels, got {n}")
        self.n, self.sym = n, sym
        if not sym:
            self.pos = np.arange(1, n - 1)
            self.neg = np.zeros(0, dtype=np.int64)
            self.low = -1.0
        else:
            half = n // 2
            self.pos = np.arange(half + (n % 2), n - 1)   # positive interior levels (not 0, not 1)
            self.neg = n - 1 - self.pos                   # their mirrors
            self.low = 0.0
        self.P = self.pos.size
        # the innermost pair of an even symmetric set shares the interval [-theta_0, theta_0]
        self.shared_center = sym and n % 2 == 0 and self.P > 0
        # parameters two apart touch disjoint intervals: update each colour class at once
        self.colors = [np.arange(0, self.P, 2), np.arange(1, self.P, 2)]
        # which intervals each parameter's value changes (for local objectives)
        touch = np.zeros((self.P, n - 1))
        for k in range(self.P):
            for j in (self.pos[k],) + ((self.neg[k],) if sym else ()):
                touch[k, j - 1] = touch[k, j] = 1.0
        self.touch = touch
        # levels = fixed + theta @ lift: the ends -1, 1 (and 0) plus each parameter and its mirror
        self.fixed = np.zeros(n)
        self.fixed[0], self.fixed[-1] = -1.0, 1.0
        self.lift = np.zeros((self.P, n))
        self.lift[np.arange(self.P), self.pos] = 1.0
        if sym:
            self.lift[np.arange(self.P), self.neg] = -1.0

    def levels(self, theta: np.ndarray) -> np.ndarray:
        return self.fixed + theta @ self.lift

    def theta(self, levels: np.ndarray) -> np.ndarray:
        return levels[:, self.pos].copy()

    def bounds(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours each parameter must stay between."""
        b = theta.shape[0]
        padded = np.concatenate([np.full((b, 1), self.low), theta, np.ones((b, 1))], axis=1)
        return padded[:, :-2], padded[:, 2:]


def level_derivatives(dist: Distribution, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray, np.ndarray]:
    """Per interval variance v [B, n-1] and mass m0; per level dV/dl g [B, n] and d2V/dl2 h [B, n]."""
    a, b = levels[:, :-1], levels[:, 1:]
    m0, p1, p2 = dist.interval_moments(a, b)
    width = b - a
    v = np.maximum(width * p1 - p2, 0.0)
    g = np.zeros_like(levels)
    g[:, 1:] += p1                  # d v_i / d(right end)
    g[:, :-1] -= width * m0 - p1    # d v_i / d(left end)
    h = np.zeros_like(levels)
    h[:, 1:-1] = (levels[:, 2:] - levels[:, :-2]) * dist.pdf(levels[:, 1:-1])
    return v, m0, g, h


def theta_derivatives(space: LevelSpace, g: np.ndarray, h: np.ndarray, m0: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """dV/dtheta and d2V/dtheta2 by the chain rule through `space`."""
    gt = g[:, space.pos]
    ht = h[:, space.pos]
    if space.sym:
        gt = gt - g[:, space.neg]
        ht = ht + h[:, space.neg]
        if space.shared_center:  # cross term of -theta_0 and theta_0 through their shared interval
            ht[:, 0] += 2.0 * m0[:, space.n // 2 - 1]
    return gt, ht


def total_variance(dist: Distribution, levels: np.ndarray) -> np.ndarray:
    """V of each row of levels [B, n]."""
    return dist.interval_variance(levels[:, :-1], levels[:, 1:]).sum(axis=1)


def best_row(dist: Distribution, levels: np.ndarray) -> tuple[np.ndarray, float]:
    var = total_variance(dist, levels)
    i = int(np.argmin(var))
    return levels[i], float(var[i])

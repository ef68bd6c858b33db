"""Adaptive quantization levels (ALQ, ALQG, AMQ; NeurIPS 2020): the library call and the training hook.

`fit_levels(method, bits, stats, **opts)` fits levels to gradient statistics with no training involved.
`LevelAdapter(AdapterConfig, init_levels)` is what the NUQ estimators hold: at the scheduled iterations
it samples gradients, computes bucket statistics, re-fits, and keeps the levels, multiplier and estimated
variance (checkpointed, so a resumed run continues with the same levels). `AdapterConfig.from_opt` reads a
run's options by their names in the trainer's schema; nuq itself never imports the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

import nuq.fit_alq  # noqa: F401  (each fit module registers its methods in FITTERS)
import nuq.fit_alqg  # noqa: F401
import nuq.fit_amq  # noqa: F401
from nuq.dists import CondTruncNormHist, Distribution, TruncNorm
from nuq.stats import BucketStats, bucket_stats
from nuq.fit_base import FITTERS, FitOptions, FitResult
from nuq.levels import MAX_BITS, level_scalars
from nuq.schedule import RefitSchedule

__all__ = ["FitResult", "fit_levels", "model_distribution", "AdapterConfig", "LevelAdapter", "RefitSchedule",
           "METHODS"]

METHODS = tuple(FITTERS)
DEFAULT_NBINS = 50000  # histogram bins of the norm-based model (the paper's resolution)

# fit_levels keyword -> FitOptions field
_OPT_FIELDS = {"nuq_cd_epochs": "cd_epochs", "nuq_amq_lr": "amq_lr", "nuq_amq_epochs": "amq_epochs",
               "nuq_sym": "sym", "nuq_inv": "inv", "levels": "previous_levels",
               "multiplier": "previous_multiplier"}
_MODEL_KEYS = ("nuq_truncated_interval", "nbins")


def _stat(stats: BucketStats | Mapping[str, Any], key: str, method: str) -> Any:
    value = getattr(stats, key, None) if isinstance(stats, BucketStats) else stats.get(key)
    if value is None:
        need = "means, sigmas, norms" if key in ("means", "sigmas", "norms") else "mean, sigma"
        raise ValueError(f"method {method!r} needs statistics {need}; {key!r} is missing")
    return value


def model_distribution(stats: BucketStats | Mapping[str, Any], norm_based: bool, interval: float = 1.0,
                       nbins: int = DEFAULT_NBINS, method: str = "") -> Distribution:
    """The paper's model of normalised coordinates: the norm-weighted mixture histogram (norm-based)
    or one truncated normal with the pooled mean and sigma (norm-less), on [-interval, interval]."""
    if isinstance(interval, bool) or not (isinstance(interval, (int, float)) and interval > 0):
        raise ValueError(f"nuq_truncated_interval must be > 0, got {interval!r}")
    if norm_based:
        arr = [np.asarray(torch.as_tensor(_stat(stats, k, method)).double().cpu())
               for k in ("means", "sigmas", "norms")]
        return CondTruncNormHist(*arr, begin=-interval, end=interval, nbins=nbins)
    mean, sigma = float(_stat(stats, "mean", method)), float(_stat(stats, "sigma", method))
    if not sigma > 0:
        raise ValueError(f"method {method!r}: the pooled sigma is {sigma}; all normalised gradient "
                         "values are equal within buckets, there is nothing to fit")
    return TruncNorm(mean, sigma, -interval, interval)


def _fit_options(opts: Mapping[str, Any]) -> FitOptions:
    unknown = sorted(set(opts) - set(_OPT_FIELDS) - set(_MODEL_KEYS))
    if unknown:
        raise ValueError(f"fit_levels: unknown option(s) {', '.join(unknown)}; accepted: "
                         f"{', '.join(sorted(set(_OPT_FIELDS) | set(_MODEL_KEYS)))}")
    kw = {_OPT_FIELDS[k]: v for k, v in opts.items() if k in _OPT_FIELDS and v is not None}
    if "previous_levels" in kw:
        kw["previous_levels"] = np.asarray(torch.as_tensor(kw["previous_levels"]).double().cpu())
    fo = FitOptions(**kw)
    for name in ("cd_epochs", "amq_epochs"):
        if not (isinstance(getattr(fo, name), int) and getattr(fo, name) >= 0):
            raise ValueError(f"nuq_{name} must be an int >= 0, got {getattr(fo, name)!r}")
    if isinstance(fo.amq_lr, bool) or not (isinstance(fo.amq_lr, (int, float)) and fo.amq_lr >= 0):
        raise ValueError(f"nuq_amq_lr must be a number >= 0, got {fo.amq_lr!r}")
    for name in ("sym", "inv"):
        if not isinstance(getattr(fo, name), bool):
            raise ValueError(f"nuq_{name} must be True or False, got {getattr(fo, name)!r}")
    return fo


def _check_method(method: str) -> None:
    if method not in FITTERS:
        raise ValueError(f"unknown adaptive method {method!r}; adaptive methods: {', '.join(FITTERS)}")


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int in 1..{MAX_BITS}, got {bits!r}")


def fit_on(method: str, bits: int, dist: Distribution, fopts: FitOptions) -> FitResult:
    """Fit `method`'s levels to an already-built model `dist` (see `fit_levels`)."""
    levels, var, mul = FITTERS[method].fit(dist, bits, fopts)
    out = torch.as_tensor(np.clip(levels, -1.0, 1.0), dtype=torch.float32)
    out[0], out[-1] = -1.0, 1.0
    return FitResult(levels=out, variance=var, multiplier=mul)


def fit_levels(method: str, bits: int, stats: BucketStats | Mapping[str, Any], **opts: Any) -> FitResult:
    """Levels of `method` (alq, alq_nb, alqg, alqg_nb, amq, amq_nb) for gradient statistics `stats`.

    stats: a BucketStats, or a mapping with means/sigmas/norms (norm-based `_nb` methods) and/or
    mean/sigma (norm-less methods). opts: nuq_cd_epochs, nuq_amq_lr, nuq_amq_epochs, nuq_sym, nuq_inv,
    nuq_truncated_interval, nbins, and the previous fit's `levels` / `multiplier` to start from."""
    _check_method(method)
    _check_bits(bits)
    fopts = _fit_options(opts)
    dist = model_distribution(stats, FITTERS[method].norm_based, opts.get("nuq_truncated_interval", 1.0),
                              opts.get("nbins", DEFAULT_NBINS), method)
    return fit_on(method, bits, dist, fopts)


def _flag(value: Any) -> bool:
    """A schema flag: the paper's grids write '' for True."""
    return value is True or value == ""


@dataclass(frozen=True)
class AdapterConfig:
    """What a LevelAdapter needs of a run. Defaults are the trainer schema's (a test checks they agree)."""

    method: str                              # nuq_method: an adaptive method (METHODS)
    bits: int = 4                            # nuq_bits
    bucket_size: int = 1024                  # nuq_bucket_size
    network_wide: bool = False               # nuq_layer
    skip_tail: bool = False                  # nuq_ig_sm_bkts
    refit_at: str | int = "100,2000,10000"   # g_osnap_iter (RefitSchedule)
    gvar_start: int = 0                      # gvar_start
    optim_start: int = 0                     # g_optim_start
    nsamples: int = 10                       # nuq_number_of_samples: gradients sampled per re-fit
    dist_num: int = 100                      # dist_num: largest-norm buckets kept for the norm-based fits
    interval: float = 1.0                    # nuq_truncated_interval
    cd_epochs: int = 30                      # nuq_cd_epochs
    amq_lr: float = 0.7                      # nuq_amq_lr
    amq_epochs: int = 50                     # nuq_amq_epochs
    sym: bool = False                        # nuq_sym
    inv: bool = False                        # nuq_inv
    mul: float = 0.5                         # nuq_mul: AMQ's starting multiplier

    @classmethod
    def from_opt(cls, opt: Mapping[str, Any]) -> "AdapterConfig":
        """The config of a run's options (trainer schema names; a missing key keeps its default)."""
        kw = {f: opt[key] for f, key in OPTION_NAMES.items() if key in opt}
        for f in fields(cls):
            if f.type == "bool" and f.name in kw:
                kw[f.name] = _flag(kw[f.name])
        return cls(**kw)


# AdapterConfig field -> the trainer option it is read from
OPTION_NAMES = {
    "method": "nuq_method", "bits": "nuq_bits", "bucket_size": "nuq_bucket_size", "network_wide": "nuq_layer",
    "skip_tail": "nuq_ig_sm_bkts", "refit_at": "g_osnap_iter", "gvar_start": "gvar_start",
    "optim_start": "g_optim_start", "nsamples": "nuq_number_of_samples", "dist_num": "dist_num",
    "interval": "nuq_truncated_interval", "cd_epochs": "nuq_cd_epochs", "amq_lr": "nuq_amq_lr",
    "amq_epochs": "nuq_amq_epochs", "sym": "nuq_sym", "inv": "nuq_inv", "mul": "nuq_mul"}


class LevelAdapter:
    """Holds a run's adaptive levels and re-fits them on schedule (see `RefitSchedule`)."""

    def __init__(self, cfg: AdapterConfig, init_levels: torch.Tensor) -> None:
        if not isinstance(cfg, AdapterConfig):
            raise TypeError(f"LevelAdapter takes an AdapterConfig (AdapterConfig.from_opt(options)), "
                            f"got {type(cfg).__name__}")
        self.cfg = cfg
        self.method = cfg.method
        _check_method(self.method)
        self.bits = cfg.bits
        _check_bits(self.bits)
        self.schedule = RefitSchedule(cfg.refit_at, cfg.gvar_start, cfg.optim_start)
        self.nsamples = cfg.nsamples
        if not (isinstance(self.nsamples, int) and self.nsamples >= 1):
            raise ValueError(f"nuq_number_of_samples must be an int >= 1, got {self.nsamples!r}")
        self.interval = float(cfg.interval)
        self.opts = {"nuq_cd_epochs": cfg.cd_epochs, "nuq_amq_lr": cfg.amq_lr, "nuq_amq_epochs": cfg.amq_epochs,
                     "nuq_sym": cfg.sym, "nuq_inv": cfg.inv}
        self.levels = torch.as_tensor(init_levels, dtype=torch.float32).detach().cpu().clone()
        self.multiplier: float | None = float(cfg.mul) if self.method.startswith("amq") else None
        self.nb_error: float | None = None      # norm-based variance estimate of the current levels
        self.fit_variance: float | None = None  # the fit's own objective (its model's variance)
        self.last_fit_step: int | None = None
        self.nfits = 0

    def maybe_refit(self, step: int, sample_grad: Callable[[], list[torch.Tensor]]) -> bool:
        """Re-fit if `step` is scheduled (once per step); returns whether the levels were re-fitted."""
        if not self.schedule.due(step) or step == self.last_fit_step:
            return False
        self.refit([sample_grad() for _ in range(self.nsamples)])
        self.last_fit_step = step
        return True

    def refit(self, samples: Sequence[Sequence[torch.Tensor]]) -> FitResult:
        """Fit new levels to gradient samples now (each a list of per-parameter tensors)."""
        cfg = self.cfg
        stats = bucket_stats(samples, cfg.bucket_size, cfg.network_wide, cfg.skip_tail, cfg.dist_num)
        nb_dist = model_distribution(stats, True, self.interval, DEFAULT_NBINS, self.method)
        fopts = _fit_options(dict(self.opts, levels=self.levels, multiplier=self.multiplier))
        dist = nb_dist if FITTERS[self.method].norm_based else \
            model_distribution(stats, False, self.interval, DEFAULT_NBINS, self.method)
        result = fit_on(self.method, self.bits, dist, fopts)
        self.levels = result.levels
        if result.multiplier is not None:
            self.multiplier = result.multiplier
        self.fit_variance = result.variance
        self.nb_error = nb_dist.variance(result.levels.double().numpy())
        self.nfits += 1
        return result

    def scalars(self) -> dict[str, float]:
        out = level_scalars(self.levels)
        if self.multiplier is not None:
            out["multiplier"] = self.multiplier
        if self.nb_error is not None:
            out["nb_error"] = self.nb_error
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"levels": self.levels.clone(), "multiplier": self.multiplier, "nb_error": self.nb_error,
                "fit_variance": self.fit_variance, "last_fit_step": self.last_fit_step,
                "nfits": self.nfits}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        levels = torch.as_tensor(state["levels"], dtype=torch.float32).cpu()
        if levels.shape != self.levels.shape or not bool(torch.all(levels[1:] >= levels[:-1])):
            raise ValueError(f"checkpoint levels {levels.tolist()} do not fit a {self.bits}-bit "
                             f"{self.method} run ({self.levels.numel()} sorted levels expected)")
        self.levels = levels.clone()
        self.multiplier = state.get("multiplier")
        self.nb_error = state.get("nb_error")
        self.fit_variance = state.get("fit_variance")
        self.last_fit_step = state.get("last_fit_step")
        self.nfits = int(state.get("nfits", 0))


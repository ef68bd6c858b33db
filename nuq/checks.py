"""Boundary checks of the quantize API: every bad input becomes one clear error naming the tensor or
argument and what would be accepted, before any kernel (C++ or CUDA) sees it."""
from __future__ import annotations

import math

import torch

from nuq.limits import MAX_BUCKET_SIZE

ACCEPTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
NORMS = ("l2", "linf")
MAX_LEVELS = 256  # indices are uint8
MAX_INDEX = 2 ** 63  # seed and offset + n fit a signed 64-bit integer


def _int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_bucket_size(bucket_size: object) -> int:
    """An int in [1, MAX_BUCKET_SIZE] (nuq.limits): what the kernels take, checked before they see it."""
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, int):
        raise TypeError(f"bucket_size must be an int, got {type(bucket_size).__name__} {bucket_size!r}")
    if not 1 <= bucket_size <= MAX_BUCKET_SIZE:
        raise ValueError(f"bucket_size must be in [1, {MAX_BUCKET_SIZE}] (2^31 - 1), got {bucket_size}")
    return bucket_size


def check_x(x: object) -> torch.Tensor:
    """The input gradient as a contiguous float32 tensor (a copy only when needed)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in ACCEPTED_DTYPES:
        raise TypeError(f"x has dtype {x.dtype}; accepted: float32, float16, bfloat16 (computed in float32)")
    return x.contiguous().to(torch.float32)


# The last level set that passed check_levels: (a private copy of the values as given, device, the result).
# A model's layers are quantized with one level set, call after call: comparing the values with the copy
# (<= 256 numbers, ~2 us) skips ~10 us of checks per call. By value, not by tensor identity and version:
# writes through .numpy() or .data bump no version counter.
_last_levels: tuple[torch.Tensor, torch.device, torch.Tensor] | None = None


def check_levels(levels: object, device: torch.device) -> torch.Tensor:
    """Levels as a contiguous float32 1-D tensor on `device`: 2..256 finite sorted values in [-1, 1]."""
    global _last_levels
    last = _last_levels
    if last is not None and last[1] == device and _same_values(levels, last[0]):
        return last[2]  # the values checked before
    lv = _check_levels(levels, device).clone()  # private: never shares memory with the caller's tensor
    _last_levels = (levels.detach().clone(), device, lv)
    return lv


def _same_values(levels: object, copy: torch.Tensor) -> bool:
    return (isinstance(levels, torch.Tensor) and levels.dtype == copy.dtype and levels.shape == copy.shape
            and levels.device == copy.device and torch.equal(levels, copy))


def _check_levels(levels: object, device: torch.device) -> torch.Tensor:
    if not isinstance(levels, torch.Tensor):
        raise TypeError(f"levels must be a torch.Tensor, got {type(levels).__name__}")
    if not levels.is_floating_point():
        raise TypeError(f"levels has dtype {levels.dtype}; accepted: a floating tensor (used as float32)")
    if levels.device != device:
        raise ValueError(f"levels is on {levels.device} but x is on {device}; put both on one device")
    if levels.dim() != 1 or not 2 <= levels.numel() <= MAX_LEVELS:
        raise ValueError(f"levels must be 1-D with 2..{MAX_LEVELS} values, got shape {tuple(levels.shape)}")
    lv = levels.detach().contiguous().to(torch.float32)
    if lv.device.type == "cpu":  # a few hundred values at most: plain Python is ~10x faster than torch ops
        values = lv.tolist()
        finite = all(map(math.isfinite, values))
        ascending = all(a <= b for a, b in zip(values, values[1:]))
        lowest, highest = values[0], values[-1]
    else:  # on an accelerator, two reductions instead of copying the values to the host
        finite = bool(torch.isfinite(lv).all())
        ascending = not bool((lv[1:] < lv[:-1]).any())
        lowest, highest = float(lv[0]), float(lv[-1])
    if not finite:
        raise ValueError(f"levels must be finite, got {lv.tolist()}")
    if not ascending:
        raise ValueError(f"levels must be sorted ascending, got {lv.tolist()}")
    if lowest < -1.0 or highest > 1.0:
        raise ValueError(f"levels must lie within [-1, 1], got min {lowest} max {highest}")
    return lv


def check_args(bucket_size: object, norm: object, seed: object, offset: object, n: int) -> None:
    """1 <= bucket_size <= MAX_BUCKET_SIZE, norm in NORMS, 0 <= seed < 2^63, 0 <= offset with offset + n < 2^63."""
    check_bucket_size(bucket_size)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    _int("seed", seed, 0, MAX_INDEX)
    _int("offset", offset, 0, MAX_INDEX - n)


def check_indices(indices: object, norms: object, levels: torch.Tensor, bucket_size: int) -> None:
    """uint8 1-D indices below len(levels), float32 1-D norms, one per bucket, all on levels' device."""
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.uint8 or indices.dim() != 1:
        raise TypeError(f"indices must be a 1-D uint8 tensor, got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)} {tuple(getattr(indices, 'shape', ()))}")
    if not isinstance(norms, torch.Tensor) or norms.dtype != torch.float32 or norms.dim() != 1:
        raise TypeError(f"norms must be a 1-D float32 tensor, got "
                        f"{getattr(norms, 'dtype', type(norms).__name__)} {tuple(getattr(norms, 'shape', ()))}")
    for name, t in (("indices", indices), ("norms", norms)):
        if t.device != levels.device:
            raise ValueError(f"{name} is on {t.device} but levels is on {levels.device}; put all on one device")
    nb = -(-indices.numel() // bucket_size)
    if norms.numel() != nb:
        raise ValueError(f"norms has {norms.numel()} values but {indices.numel()} indices in buckets of "
                         f"{bucket_size} need {nb}")
    if indices.numel() and int(indices.max()) >= levels.numel():
        raise ValueError(f"indices holds {int(indices.max())} but there are only {levels.numel()} levels")


def check_out(out: object, flat: torch.Tensor) -> None:
    """`out` must be a contiguous float32 tensor with as many values as x, on x's device."""
    if not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or not out.is_contiguous():
        raise TypeError(f"out must be a contiguous float32 tensor, got "
                        f"{getattr(out, 'dtype', type(out).__name__)}")
    if out.numel() != flat.numel() or out.device != flat.device:
        raise ValueError(f"out has {out.numel()} values on {out.device} but x has {flat.numel()} on {flat.device}")

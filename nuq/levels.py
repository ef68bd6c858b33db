"""Level sets of every quantization method: a registry, so the estimator, the adaptive fitting and the
kernel all read one definition (the paper code's definitions, so results stay comparable with it).

`METHODS[name]` is a `Method(norm, adaptive, init_levels)`. `init_levels(bits, mul)` returns the sorted
float32 levels in [-1, 1] the method starts from (adaptive methods then fit theirs during training).
Levels are computed in float64 and rounded once to float32, so they are exact and symmetric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nuq import names
from nuq.registry import Registry

MAX_BITS = 8  # level indices are stored as uint8, so at most 256 levels


@dataclass(frozen=True)
class Method:
    """One quantization method: which bucket norm normalises, whether levels adapt, and its start levels.

    `quantizes` is False only for `none` (full precision); its `init_levels` is empty."""
    name: str
    norm: str  # 'l2' or 'linf'
    adaptive: bool
    init_levels: Callable[[int, float], torch.Tensor]
    quantizes: bool = True


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int in 1..{MAX_BITS} (indices are uint8), got {bits!r}")


def _check_mul(mul: float) -> None:
    if not 0.0 < float(mul) < 1.0:
        raise ValueError(f"nuq_mul (the exponential-level multiplier) must be in (0, 1), got {mul!r}")


def uniform_levels(bits: int, mul: float = 0.5) -> torch.Tensor:
    """QSGD: 2^bits levels evenly spaced on [-1, 1] (no zero level for any bits). `mul` is unused."""
    _check_bits(bits)
    k = 2 ** bits
    vals = torch.arange(k, dtype=torch.float64) * (2.0 / (k - 1)) - 1.0
    # exact symmetry: mirror the non-negative half (float64 rounding could differ by an ulp)
    vals = torch.where(torch.arange(k) < k // 2, -vals.flip(0), vals)
    return vals.to(torch.float32)


def exponential_levels(bits: int, mul: float = 0.5) -> torch.Tensor:
    """NUQSGD: 2^bits levels +-mul^j, j = 0 .. 2^(bits-1)-1 (no zero level: values near 0 snap to
    +-mul^(2^(bits-1)-1))."""
    _check_bits(bits)
    _check_mul(mul)
    pos = torch.tensor([float(mul) ** j for j in range(2 ** (bits - 1))], dtype=torch.float64)
    return torch.cat([-pos, pos.flip(0)]).to(torch.float32)


def ternary_levels(bits: int, mul: float = 0.5) -> torch.Tensor:
    """TernGrad: {-1, 0, 1} whatever `bits` is."""
    _check_bits(bits)
    return torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float32)


def no_levels(bits: int, mul: float = 0.5) -> torch.Tensor:
    """Full precision (`none`): there is nothing to snap to."""
    _check_bits(bits)
    return torch.empty(0, dtype=torch.float32)


METHODS = Registry("nuq_method", names.METHODS, "nuq/names.py METHODS")


def _register(method: Method) -> None:
    METHODS.add(method.name, method)


_register(Method("none", "l2", False, no_levels, quantizes=False))
_register(Method("q", "l2", False, uniform_levels))
_register(Method("qinf", "linf", False, uniform_levels))
_register(Method("nuq", "l2", False, exponential_levels))
_register(Method("trn", "linf", False, ternary_levels))
for _name in names.ADAPTIVE:
    _register(Method(_name, "l2", True, exponential_levels))


def get_method(name: str) -> Method:
    """The registered method `name`, or a ValueError listing the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown nuq_method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def level_scalars(levels: torch.Tensor) -> dict[str, float]:
    """The levels as logged scalars: {'levels/0': l_0, ...}."""
    return {f"levels/{i}": float(v) for i, v in enumerate(levels.tolist())}


def bits_per_coordinate(levels: torch.Tensor) -> float:
    """Bits needed to name one level: ceil(log2(#levels)) (0 for full precision, logged as 32)."""
    n = int(levels.numel())
    return 32.0 if n == 0 else float(max(1, (n - 1).bit_length()))

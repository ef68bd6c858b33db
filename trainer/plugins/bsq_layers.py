"""The bit representation of BSQ (docs/bsq.md): a conv or linear weight as signed bit planes.

A layer of precision N holds two tensors `pos`, `neg` of shape (N, *weight.shape), bit planes MSB first,
a learnable scale `scale` and a buffer `denom`. Its weight is

    w = scale * (RoundSTE(u) / denom),   u = sum_b (pos_b - neg_b) 2^(N-1-b),

with RoundSTE rounding u, clipped to +-(2^N - 1), to an integer and passing the gradient straight through.
With denom = 2^N - 1 this is the study's s * BitSTE(sum_b (P_b - N_b) 2^(N-1-b) / (2^N - 1)). Pruning keeps
the integer levels and adjusts `denom` instead of renormalising the scale (dropping the top plane leaves
`denom`, dropping the bottom plane halves levels and `denom`), so the effective weights stay bit-identical
and the bit parameters' gradients are the study's. In `value` form (fine-tuning, the scheme fixed) the
layer trains v = u / denom directly and computes w = scale * (RoundSTE(v * denom) / denom).

The study's renormalised parameters are s' = scale / c and v' = c v with c = denom / (2^N - 1) (1 until a
pruning); GradScale gives `scale` the gradient c^2 dL/dscale and `value` dL/dv / c^2, so that SGD moves
every parameter as it moves the study's (a layer pruned from 8 to 1 top bit has c = 255: without this its
scale would move 255^2 times slower than the study's and its fine-tuned levels 255^2 times faster).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BITS, VALUE = "bits", "value"  # the two forms of a layer


class RoundSTE(torch.autograd.Function):
    """round(clip(x, -limit, limit)) forward, identity backward (the study's straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, limit: float) -> torch.Tensor:  # type: ignore[override]
        return x.clamp(-limit, limit).round()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class GradScale(torch.autograd.Function):
    """Identity forward; the gradient times `factor` backward (a step in another parametrization's units)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(factor)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def places(nbits: int, like: torch.Tensor) -> torch.Tensor:
    """2^(N-1-b) for b = 0..N-1 (MSB first), shaped to broadcast over planes of `like`'s shape."""
    return (2.0 ** torch.arange(nbits - 1, -1, -1, dtype=like.dtype, device=like.device)).view(
        nbits, *([1] * (like.dim() - 1)))


def to_planes(levels: torch.Tensor, nbits: int) -> torch.Tensor:
    """Binary digits (MSB first, exact 0/1 floats) of non-negative integer-valued `levels` < 2^nbits."""
    ints = levels.to(torch.int64)
    shifts = torch.arange(nbits - 1, -1, -1, device=levels.device).view(nbits, *([1] * levels.dim()))
    return ((ints.unsqueeze(0) >> shifts) & 1).to(levels.dtype)


def quantize_float(weight: torch.Tensor, nbits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed integer levels, scale) of a float weight at `nbits`: scale = max|W|, levels = round(W (2^N-1)/s)."""
    scale = weight.detach().abs().max()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(weight.detach() * (2 ** nbits - 1) / scale), scale


class BitLayer(nn.Module):
    """A Conv2d or Linear whose weight is computed from its bit representation (the module docstring)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, nbits: int, form: str = BITS) -> None:
        super().__init__()
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                raise ValueError(f"bsq: conv padding_mode {layer.padding_mode!r} is not supported; use 'zeros'")
            self.conv_args = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                  groups=layer.groups)
        else:
            self.conv_args = None
        self.shape = tuple(layer.weight.shape)
        self.form, self.nbits = form, nbits
        self.bias = layer.bias
        levels, scale = quantize_float(layer.weight, nbits)
        self.scale = nn.Parameter(scale)
        self.register_buffer("denom", torch.tensor(float(2 ** nbits - 1), dtype=scale.dtype, device=scale.device))
        self.set_levels(levels, nbits)

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())

    @property
    def limit(self) -> float:
        return float(2 ** self.nbits - 1)

    def _replace(self, name: str, value: torch.Tensor) -> None:
        """A new Parameter (new identity: the optimizer's state for it starts afresh)."""
        if name in self._parameters:
            del self._parameters[name]
        self.register_parameter(name, nn.Parameter(value.detach().clone()))

    def levels(self) -> torch.Tensor:
        """The signed integer levels the forward uses now."""
        with torch.no_grad():
            return self.raw_levels().clamp(-self.limit, self.limit).round()

    def raw_levels(self) -> torch.Tensor:
        if self.form == BITS:
            return ((self.pos - self.neg) * places(self.nbits, self.pos)).sum(0)
        return self.value * self.denom

    def set_levels(self, levels: torch.Tensor, nbits: int) -> None:
        """Represent integer `levels` (|levels| < 2^nbits) exactly at precision `nbits`."""
        self.nbits = nbits
        levels = levels.detach().clamp(-self.limit, self.limit)
        for name in ("pos", "neg", "value"):
            if name in self._parameters:
                del self._parameters[name]
        if self.form == BITS:
            self._replace("pos", to_planes(levels.clamp(min=0), nbits))
            self._replace("neg", to_planes((-levels).clamp(min=0), nbits))
        else:
            self._replace("value", levels / self.denom)

    def resize(self, nbits: int) -> None:
        """Zero parameters of precision `nbits` (the values are loaded next, e.g. from a checkpoint)."""
        self.set_levels(torch.zeros(self.shape, dtype=self.scale.dtype, device=self.scale.device), nbits)

    def renorm(self) -> torch.Tensor:
        """c = denom / (2^N - 1): how much larger `scale` is than the study's renormalised scale."""
        return self.denom / self.limit

    def weight(self) -> torch.Tensor:
        """scale * RoundSTE(u) / denom, with the study's parameter steps (GradScale, the module docstring)."""
        c2 = self.renorm() ** 2
        levels = self.raw_levels() if self.form == BITS else GradScale.apply(self.value, 1 / c2) * self.denom
        return GradScale.apply(self.scale, c2) * (RoundSTE.apply(levels, self.limit) / self.denom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_args is None:
            return F.linear(x, self.weight(), self.bias)
        return F.conv2d(x, self.weight(), self.bias, **self.conv_args)

    def bit_parameters(self) -> list[nn.Parameter]:
        return [self.pos, self.neg] if self.form == BITS else [self.value]

    def clamp_(self) -> None:
        """After each step: bits to [0, 2] (they may 'carry'); a fine-tuned value to the N-bit range."""
        with torch.no_grad():
            if self.form == BITS:
                self.pos.clamp_(0, 2)
                self.neg.clamp_(0, 2)
            else:
                bound = float(self.limit / self.denom)
                self.value.clamp_(-bound, bound)

    def plane_nonzero(self) -> torch.Tensor:
        """Share of non-zero entries of each plane of pos - neg (MSB first)."""
        with torch.no_grad():
            return ((self.pos - self.neg) != 0).flatten(1).float().mean(1)

    def group_lasso(self) -> torch.Tensor:
        """sum over planes of the L2 norm of the plane (both signs together), as the study: sqrt(1e-8 + ...)."""
        return torch.sqrt(1e-8 + (self.pos.square() + self.neg.square()).flatten(1).sum(1)).sum()

    def requantize_and_prune(self, threshold: float) -> None:
        """The study's quant() + pruning(threshold): exact bits, then drop top and bottom planes that are empty
        (or below `threshold` percent non-zero); the levels and `denom` keep the represented values."""
        levels = self.levels()
        nbits, denom = self.nbits, self.denom.clone()
        mags, sign = levels.abs(), levels.sign()
        while nbits > 1:  # from the MSB down
            top = 2 ** (nbits - 1)
            share = 100.0 * float((mags >= top).float().mean())
            if share > 0 and share >= threshold:
                break
            mags = torch.where(mags >= top, torch.full_like(mags, top - 1), mags)  # saturate (study: add, clip)
            nbits -= 1
        while nbits > 1:  # from the LSB up
            share = 100.0 * float((mags % 2 != 0).float().mean())
            if share > threshold or (share > 0 and threshold == 0):
                break
            mags, denom, nbits = torch.floor(mags / 2), denom / 2, nbits - 1
        self.denom.copy_(denom)
        self.set_levels(sign * mags, nbits)


class ActQuant(nn.Module):
    """An activation followed by per-tensor max-abs uniform quantization to `bits` bits (identity STE)."""

    def __init__(self, act: nn.Module, bits: int) -> None:
        super().__init__()
        self.act, self.bits = act, bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(x)
        top = float(2 ** self.bits - 1)
        span = a.detach().abs().max().clamp(min=torch.finfo(a.dtype).tiny)
        q = span * torch.sign(a) * torch.round(a.abs() * top / span) / top
        return a + (q - a).detach()

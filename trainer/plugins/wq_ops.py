"""The `wq` plugin's quantizers and quantized convs: XNOR-Net, TWN and DoReFa-Net as the study's code has
them (onion-rain/MCTS at 9868b20; ../shared/seeds/002_pytorch_quantize.md), with the papers' variants
behind options.

Quantization is simulated (quantize -> dequantize in float); the convs keep the full-precision latent
weights as their parameters, which the optimizer updates, and quantize them (and their inputs) in every
forward. Straight-through estimators pass the upstream gradient unchanged through sign and round; XNOR's
clamp before the sign masks it to |x| <= 1 (a hard-tanh STE).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

FULL_BITS = 32  # a bit width of 32 bypasses the quantizer
TWN_DELTA = 0.7  # TWN's threshold: delta = 0.7 x mean |w| per filter


class _StraightThrough(torch.autograd.Function):
    """fn(x) forward, the identity backward; fn's output is exact (no x + (fn(x) - x) rounding error)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return fn(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def ste_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) (sign(0) = 0, as torch's) with the identity gradient."""
    return _StraightThrough.apply(x, torch.sign)


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) (half to even, as torch's) with the identity gradient."""
    return _StraightThrough.apply(x, torch.round)


def _positive(x: torch.Tensor) -> torch.Tensor:
    """x, but at least the smallest normal float: an all-zero tensor then quantizes to zeros, not NaN."""
    return x.clamp(min=torch.finfo(x.dtype).tiny)


def _per_filter_abs_mean(w: torch.Tensor) -> torch.Tensor:
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


# ---- XNOR-Net ------------------------------------------------------------------------------------------

def xnor_input(x: torch.Tensor) -> torch.Tensor:
    """Centre over channels (per sample and pixel), clamp to [-1, 1], sign; no scaling factor K."""
    return ste_sign((x - x.mean(dim=1, keepdim=True)).clamp(-1, 1))


def xnor_weight(w: torch.Tensor) -> torch.Tensor:
    """Centre over input channels, clamp, sign, times alpha_o = mean |W_o| of the raw weight (differentiable)."""
    return ste_sign((w - w.mean(dim=1, keepdim=True)).clamp(-1, 1)) * _per_filter_abs_mean(w)


# ---- Ternary weight networks ---------------------------------------------------------------------------

def ternarize(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """+1 where w > delta, -1 where w < -delta, else 0; the identity gradient."""
    return _StraightThrough.apply(w, lambda v: torch.sign(v) * (v.abs() > delta))


def twn_weight(w: torch.Tensor, alpha_rule: str = "repo") -> torch.Tensor:
    """alpha_o x t with delta_o = 0.7 mean |W_o|. alpha_o = sum of the kept |w| over the count of the zeroed
    weights (`repo`, the study's code) or of the kept ones (`paper`, TWN's formula); each count at least 1."""
    delta = TWN_DELTA * _per_filter_abs_mean(w)
    kept = (w.abs() > delta).to(w.dtype)
    dims = tuple(range(1, w.dim()))
    count = (1 - kept if alpha_rule == "repo" else kept).sum(dim=dims, keepdim=True).clamp(min=1)
    alpha = (w.abs() * kept).sum(dim=dims, keepdim=True) / count
    return alpha * ternarize(w, delta)


# ---- DoReFa-Net ----------------------------------------------------------------------------------------

def quantize_k(x: torch.Tensor, bits: int) -> torch.Tensor:
    """round((2^k - 1) x) / (2^k - 1) for x in [0, 1], identity STE on the round."""
    n = 2 ** bits - 1
    return ste_round(x * n) / n


def dorefa_weight(w: torch.Tensor, bits: int, variant: str = "repo") -> torch.Tensor:
    """2 quantize_k(tanh(W) / (2 max|tanh W|) + 1/2) - 1, max over the whole layer; 32 bits: W itself.
    `paper` at 1 bit: sign(W) x mean |W| over the layer, DoReFa's own binary case."""
    if bits >= FULL_BITS:
        return w
    if variant == "paper" and bits == 1:
        scale = _positive(w.abs().mean().detach())
        return ste_sign(w / scale) * scale
    t = torch.tanh(w)
    return 2 * quantize_k(t / (2 * _positive(t.abs().max())) + 0.5, bits) - 1


def dorefa_input(x: torch.Tensor, bits: int, variant: str = "repo") -> torch.Tensor:
    """`repo`: quantize_k(tanh(x) / (2 max|tanh x|) + 1/2), max over the batch tensor: post-ReLU inputs
    reach only the upper half of the grid (k bits act as about k - 1). `paper`: quantize_k(clamp(x, 0, 1)).
    32 bits: x itself."""
    if bits >= FULL_BITS:
        return x
    if variant == "paper":
        return quantize_k(x.clamp(0, 1), bits)
    t = torch.tanh(x)
    return quantize_k(t / (2 * _positive(t.abs().max())) + 0.5, bits)


# ---- one method's quantizer, and the layers that use it ------------------------------------------------

@dataclass(frozen=True)
class Quantizer:
    """What a quantized layer applies to its weight and its input, and what a deployed layer would store:
    `bits_w` per weight, `bits_a` per input value (32: full precision), `scales` fp32 scales per output
    unit (`filter`), per layer (`layer`) or none."""
    method: str
    bits_w: int
    bits_a: int
    weight: Callable[[torch.Tensor], torch.Tensor]
    input: Callable[[torch.Tensor], torch.Tensor]
    scales: str = "none"


QUANTIZERS: dict[str, Callable[..., Quantizer]] = {
    "xnor": lambda **_: Quantizer("xnor", 1, 1, xnor_weight, xnor_input, "filter"),
    "ternary": lambda twn_alpha="repo", **_: Quantizer(
        "ternary", 2, FULL_BITS, partial(twn_weight, alpha_rule=twn_alpha), lambda x: x, "filter"),
    "dorefa": lambda w_bits=FULL_BITS, a_bits=FULL_BITS, dorefa="repo", **_: Quantizer(
        "dorefa", w_bits, a_bits, partial(dorefa_weight, bits=w_bits, variant=dorefa),
        partial(dorefa_input, bits=a_bits, variant=dorefa),
        "layer" if dorefa == "paper" and w_bits == 1 else "none"),
}


def make_quantizer(method: str, **settings) -> Quantizer:
    """The quantizer of `method` (xnor, ternary, dorefa) with its settings (twn_alpha; w_bits, a_bits, dorefa)."""
    try:
        return QUANTIZERS[method](**settings)
    except KeyError:
        raise ValueError(f"wq: unknown method {method!r}; one of: {', '.join(QUANTIZERS)}") from None


class _Quantized:
    """Shared by QuantConv2d and QuantLinear: the layer's own forward on the quantized input and weight."""
    quantizer: Quantizer
    weight: nn.Parameter

    def weight_bits(self) -> int:
        """Bits a deployed layer stores for its weight: codes plus fp32 scales; the full-precision latent
        weight is not counted (a 32-bit weight is stored as it is)."""
        q = self.quantizer
        if q.bits_w >= FULL_BITS:
            return FULL_BITS * self.weight.numel()
        scales = {"filter": self.weight.shape[0], "layer": 1, "none": 0}[q.scales]
        return q.bits_w * self.weight.numel() + FULL_BITS * scales


class QuantConv2d(_Quantized, nn.Conv2d):
    """A Conv2d convolving quantizer.input(x) with quantizer.weight(W); W stays the full-precision parameter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantizer.input(x), self.quantizer.weight(self.weight), self.bias)


class QuantLinear(_Quantized, nn.Linear):
    """A Linear on quantizer.input(x) with quantizer.weight(W) (for wq_first_last's classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantizer.input(x), self.quantizer.weight(self.weight), self.bias)


def quantized(layer: nn.Conv2d | nn.Linear, quantizer: Quantizer) -> QuantConv2d | QuantLinear:
    """The same layer (shapes, stride, padding, the very weight and bias parameters), quantized."""
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"wq: conv with padding_mode {layer.padding_mode!r} is not supported (only 'zeros')")
        new: nn.Module = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                     layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                                     device="meta")
    else:
        new = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None, device="meta")
    new.weight, new.bias = layer.weight, layer.bias
    new.quantizer = quantizer
    return new

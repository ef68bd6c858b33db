"""ActNN's layers: conv/linear, batch norm and ReLU that keep a compressed copy of what backward needs.

The forward is computed in full precision; only the saved tensors shrink. `ActConv2d`/`ActLinear` keep
their input compressed and use it for the weight gradient only (the input gradient needs the weight alone
and is exact). `ActBatchNorm2d` keeps the normalised input x_hat compressed and computes its whole
backward from the dequantized x_hat, so its noise reaches the layers below (why `quantize` has more
variance than `qlinear`). `ActReLU` keeps a 1-bit mask. Each is the stock module with its class swapped
(`convert`), so parameters and state_dict keys are unchanged. What a layer compresses with, and how many
bits each sample gets, is its `Compressor` (trainer/plugins/actnn.py sets it).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from nuq.packing import mask_mul, relu_mask
from trainer.plugins.actnn_quant import Compressed, compress, decompress, variance_cost


class Compressor:
    """One layer's quantizer settings and its per-sample bit allocation.

    `bits_for(x)` gives each sample's bits: `ibits` everywhere when the budget is met, else the greedy
    allocation of an average of `avg_bits` from the predicted variances s_n C_n (group ranges x gradient
    scale). With the batch's dataset indices (`index`, set before the forward) s_n is the study's: an
    EMA(0.5) of sample n's squared output-gradient norm recorded in backward, the batch mean for samples
    not seen yet; without them one scale for the layer, the EMA of the batch mean (the release's
    `use_gradient=False`)."""

    def __init__(self, group_size: int, pergroup: bool, store: torch.dtype, ibits: int, avg_bits: float,
                 kernel_area: int, allocate: Callable[..., torch.Tensor]) -> None:
        self.group_size, self.pergroup, self.store = group_size, pergroup, store
        self.ibits, self.avg_bits, self.kernel_area = ibits, avg_bits, kernel_area
        self.allocate = allocate
        self.enabled = True
        self.update_scale = True  # False: the variance protocol's frozen scales
        self.index: torch.Tensor | None = None  # dataset indices of the current batch (CPU), if known
        self.grad_scale = 0.0  # EMA of mean_n ||dL/d out_n||^2
        self.scales = torch.zeros(0)  # per dataset index: EMA of ||dL/d out_n||^2 (0: not seen)
        self.last_cost: torch.Tensor | None = None  # s_n C_n of the last forward (for the per-layer allocation)
        self.last_bits: float | None = None  # mean bits of the last allocation
        self.features = 0  # features per sample of the last input
        self.follow: Compressor | None = None  # per-layer allocation: take this one's bits instead

    def sample_scales(self, n: int) -> torch.Tensor | None:
        """s_n of the current batch's samples (unseen ones: the batch mean, as the study's), or None
        without indices."""
        if self.index is None:
            return None
        if len(self.index) != n:
            raise ValueError(f"actnn: a batch of {n} samples was given {len(self.index)} dataset indices; "
                             "call begin_batch(index) with the indices of each batch before its forward pass")
        s = self._grown(self.index)[self.index].double()
        return torch.where(s == 0, s.mean() + 1e-9, s)

    def _grown(self, index: torch.Tensor) -> torch.Tensor:
        needed = int(index.max()) + 1 if len(index) else 0
        if needed > len(self.scales):
            grow = max(needed, 2 * len(self.scales)) - len(self.scales)  # doubling: a few copies per epoch
            self.scales = torch.cat([self.scales, self.scales.new_zeros(grow)])
        return self.scales

    def bits_for(self, x: torch.Tensor) -> torch.Tensor:
        cost = variance_cost(x, self.group_size, self.pergroup, self.kernel_area).cpu()
        n, self.features = x.shape[0], x[0].numel()
        per_sample = self.sample_scales(n)
        self.last_cost = cost * (per_sample if per_sample is not None else max(self.grad_scale, 0.0))
        budget = max(n, int(round(self.avg_bits * n)))
        known = per_sample is not None or self.grad_scale > 0
        bits = self.allocate(self.last_cost if known else cost, self.ibits, budget)
        self.last_bits = float(bits.double().mean())
        return bits

    def compress(self, x: torch.Tensor) -> Compressed:
        return compress(x, self.bits_for(x), self.group_size, self.pergroup, self.store)

    def record_grad(self, grad_out: torch.Tensor, index: torch.Tensor | None) -> None:
        """Backward of a batch whose forward saw dataset indices `index` (or None): update the scales."""
        if not self.update_scale:
            return
        norms = grad_out.detach().flatten(1).float().square().sum(1).cpu()
        scale = float(norms.mean())
        self.grad_scale = scale if self.grad_scale == 0 else 0.5 * self.grad_scale + 0.5 * scale
        if index is not None:
            scales = self._grown(index)
            scales[index] = 0.5 * scales[index] + 0.5 * norms

    def watch(self, out: torch.Tensor) -> torch.Tensor:
        """Compression off (the variance protocol's exact pass): still record the scales in backward."""
        if out.requires_grad and self.update_scale:
            index = self.index
            out.register_hook(lambda g: self.record_grad(g, index))
        return out


def _save(ctx: Any, c: Compressed, *others: torch.Tensor) -> None:
    ctx.meta, ctx.n_others = c.meta(), len(others)
    ctx.save_for_backward(*others, *c.tensors())


def _load(ctx: Any) -> tuple[Compressed, tuple[torch.Tensor, ...]]:
    saved = ctx.saved_tensors
    return Compressed.from_tensors(ctx.meta, saved[ctx.n_others:]), saved[:ctx.n_others]


class _ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: nn.Conv2d) -> torch.Tensor:
        ctx.layer, ctx.has_bias, ctx.index = layer, bias is not None, layer.compressor.index
        _save(ctx, layer.compressor.compress(x), weight)
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        """One convolution backward call, as the stock layer's (the input gradient needs only the weight;
        the weight gradient gets the dequantized input): about half the time of two separate calls."""
        c, (weight,) = _load(ctx)
        m = ctx.layer
        m.compressor.record_grad(grad_out, ctx.index)
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad_out, decompress(c, grad_out.dtype), weight, [weight.shape[0]] if ctx.has_bias else None,
            list(m.stride), list(m.padding), list(m.dilation), False, [0, 0], m.groups,
            [ctx.needs_input_grad[0], True, ctx.has_bias])
        return gx, gw, gb, None


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: nn.Linear) -> torch.Tensor:
        ctx.layer, ctx.has_bias, ctx.index = layer, bias is not None, layer.compressor.index
        _save(ctx, layer.compressor.compress(x), weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        c, (weight,) = _load(ctx)
        ctx.layer.compressor.record_grad(grad_out, ctx.index)
        gx = grad_out @ weight if ctx.needs_input_grad[0] else None
        x_hat = decompress(c, grad_out.dtype)
        gw = grad_out.reshape(-1, grad_out.shape[-1]).t() @ x_hat.reshape(-1, x_hat.shape[-1])
        gb = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if ctx.has_bias else None
        return gx, gw, gb, None


class _BatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layer: nn.BatchNorm2d) -> torch.Tensor:
        # x_hat and 1/sqrt(var + eps) in one pass; updates the running statistics as F.batch_norm does
        out, _, invstd = torch.native_batch_norm(x, None, None, layer.running_mean, layer.running_var, True,
                                                 _momentum(layer), layer.eps)
        ctx.layer, ctx.index = layer, layer.compressor.index
        _save(ctx, layer.compressor.compress(out), weight, invstd)
        return torch.addcmul(bias.view(1, -1, 1, 1), out, weight.view(1, -1, 1, 1))

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        """From the dequantized x_hat: gx = w invstd (g - mean(g) - x_hat mean(g x_hat)), gw = sum(g x_hat),
        gb = sum(g), per channel. That is torch's fused batch-norm backward of an input x_hat with mean 0,
        invstd 1 and weight w * invstd, so one call (two passes) computes all three."""
        c, (weight, invstd) = _load(ctx)
        ctx.layer.compressor.record_grad(grad_out, ctx.index)
        x_hat = decompress(c, grad_out.dtype)
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_out, x_hat, weight * invstd, None, None, torch.zeros_like(invstd), torch.ones_like(invstd), True,
            0.0, [ctx.needs_input_grad[0], True, True])
        return gx, gw, gb, None


def _momentum(layer: nn.BatchNorm2d) -> float:
    """As nn.BatchNorm2d.forward: count the batch, and use 1/count as momentum when it is None."""
    layer.num_batches_tracked.add_(1)
    return layer.momentum if layer.momentum is not None else 1.0 / float(layer.num_batches_tracked)


class _ReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out, mask = relu_mask(x.contiguous())  # one pass with the C++ op on the CPU, torch ops elsewhere
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        return mask_mul(grad_out.contiguous(), mask)


def _training(m: nn.Module) -> bool:
    return m.training and torch.is_grad_enabled() and getattr(m, "compressor", None) is not None


def _stock(m: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The stock layer's forward; in training with compression off, its output gradient still updates the
    gradient scales (the variance protocol's exact pass fills them, as the study's)."""
    out = forward(x)
    return m.compressor.watch(out) if _training(m) else out


class ActConv2d(nn.Conv2d):
    compressor: Compressor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_training(self) and self.compressor.enabled) or self.padding_mode != "zeros":
            return _stock(self, super().forward, x)
        return _ConvFn.apply(x, self.weight, self.bias, self)


class ActLinear(nn.Linear):
    compressor: Compressor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_training(self) and self.compressor.enabled):
            return _stock(self, super().forward, x)
        return _LinearFn.apply(x, self.weight, self.bias, self)


class ActBatchNorm2d(nn.BatchNorm2d):
    compressor: Compressor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_training(self) and self.compressor.enabled) or not self.affine or not self.track_running_stats:
            return _stock(self, super().forward, x)
        return _BatchNormFn.apply(x, self.weight, self.bias, self)


class ActReLU(nn.ReLU):
    compressor: Compressor | None = None
    enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and self.enabled and not self.inplace:
            return _ReLUFn.apply(x)
        return super().forward(x)


SWAPS = {nn.Conv2d: ActConv2d, nn.Linear: ActLinear, nn.BatchNorm2d: ActBatchNorm2d, nn.ReLU: ActReLU}


def convert(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    """Swap the class of every module of exactly one of `kinds` (stock layers) for its Act* version, in
    place; the swapped modules in model order."""
    swapped = []
    for m in model.modules():
        if type(m) in kinds:
            m.__class__ = SWAPS[type(m)]
            swapped.append(m)
    return swapped

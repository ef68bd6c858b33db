"""ActNN's activation quantizer: per-sample groups, stochastic rounding, bit-packed codes, greedy bits.

Why: the activations saved for backward dominate training memory; ActNN keeps them at ~2 bits with an
unbiased rounding, so the weight gradients stay unbiased and only their variance grows (docs/actnn.md).

Each sample's activation is flattened to F features, zero-padded to a multiple of the group size G and
viewed as (N, F/G, G). The range is per (sample, group) with `pergroup`, else one min/max of the whole
tensor (the padding takes part in it, as in the study). With b_n bits for sample n and B_n = 2^b_n - 1:
code = round(clamp((x - min) * B_n / (max - min) + U(-1/2, 1/2), 0, B_n)); E[code / scale + min] = x.
min and scale are stored in bfloat16 (the study's; float32 on request for an exactly unbiased round trip),
the codes are packed densely with nuq's bit packing (torch.ops.nuq.pack/unpack), one stream per bit width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nuq.packing import MAX_BITS, MIN_BITS, pack, unpack

EPS = 1e-6  # widens each range as the study does, so a constant group still has a finite scale
STORE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class Compressed:
    """What autograd keeps of one activation: packed codes (one byte stream per bit width present, in
    ascending width), per-sample bits, and per-(sample, group) min and scale."""
    shape: tuple[int, ...]
    group_size: int
    widths: tuple[int, ...]
    streams: tuple[torch.Tensor, ...]
    bits: torch.Tensor  # uint8 (N,)
    mn: torch.Tensor  # (N, groups, 1) in the store dtype
    scale: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors to hand to ctx.save_for_backward (so saved-tensor hooks see and count them)."""
        return (self.bits, self.mn, self.scale, *self.streams)

    @classmethod
    def from_tensors(cls, meta: tuple, tensors: tuple[torch.Tensor, ...]) -> "Compressed":
        """Inverse of (meta(), tensors())."""
        bits, mn, scale, *streams = tensors
        return cls(*meta, tuple(streams), bits, mn, scale)

    def meta(self) -> tuple:
        """The plain Python part: shape, group size, widths."""
        return self.shape, self.group_size, self.widths

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """x (N, ...) as (N, groups, G), zero-padded at the end of each sample."""
    n, features = x.shape[0], x[0].numel()
    groups = -(-features // group_size)
    flat = x.reshape(n, features)
    if groups * group_size != features:
        flat = torch.nn.functional.pad(flat, (0, groups * group_size - features))
    return flat.view(n, groups, group_size)


def ranges(v: torch.Tensor, pergroup: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) per (sample, group) of grouped v, or of the whole tensor broadcast to every group."""
    if pergroup:
        return v.amin(-1, keepdim=True), v.amax(-1, keepdim=True)
    shape = (v.shape[0], v.shape[1], 1)
    return v.min().expand(shape), v.max().expand(shape)


def quantize(x: torch.Tensor, bits: torch.Tensor, group_size: int,
             pergroup: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 (N, groups, G), min, scale) of x (N, ...) stochastically rounded to bits[n] bits."""
    if bits.numel() != x.shape[0] or int(bits.min()) < MIN_BITS or int(bits.max()) > MAX_BITS:
        raise ValueError(f"need one bit width in {MIN_BITS}..{MAX_BITS} per sample ({x.shape[0]}), "
                         f"got {bits.tolist()}")
    with torch.no_grad():
        v = grouped(x.detach().float(), group_size)
        mn, mx = ranges(v, pergroup)
        mn = mn - EPS
        levels = (2.0 ** bits.to(v.device, torch.float32) - 1).view(-1, 1, 1)
        scale = levels / (mx + EPS - mn)
        noise = torch.rand_like(v).sub_(0.5)
        codes = v.sub(mn).mul_(scale).add_(noise).clamp_(min=0).clamp_(max=levels).round_().to(torch.uint8)
        return codes, mn, scale


def pack_codes(codes: torch.Tensor, bits: torch.Tensor, mn: torch.Tensor, scale: torch.Tensor,
               shape: tuple[int, ...], store: torch.dtype = torch.bfloat16) -> Compressed:
    """Pack each sample's codes at its bit width: one stream per width present."""
    bits = bits.to(torch.uint8).cpu()
    widths = tuple(sorted({int(b) for b in bits}))
    streams = tuple(pack(codes[(bits == b).to(codes.device)].reshape(-1), b) for b in widths)
    return Compressed(tuple(shape), codes.shape[-1], widths, streams, bits, mn.to(store), scale.to(store))


def compress(x: torch.Tensor, bits: torch.Tensor, group_size: int, pergroup: bool,
             store: torch.dtype = torch.bfloat16) -> Compressed:
    """Stochastically round x (N, ...) to `bits[n]` bits per sample and pack the codes."""
    codes, mn, scale = quantize(x, bits, group_size, pergroup)
    return pack_codes(codes, bits, mn, scale, tuple(x.shape), store)


def decompress(c: Compressed, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dequantized activation code / scale + min, in the original shape."""
    n, groups = c.mn.shape[0], c.mn.shape[1]
    group_size = c.group_size
    codes = torch.empty(n, groups * group_size, dtype=torch.uint8, device=c.mn.device)
    for b, stream in zip(c.widths, c.streams):
        rows = (c.bits == b).nonzero().squeeze(1).to(codes.device)
        codes[rows] = unpack(stream, b, rows.numel() * groups * group_size).view(-1, groups * group_size)
    v = codes.view(n, groups, group_size).to(dtype).div_(c.scale.to(dtype)).add_(c.mn.to(dtype))
    features = 1
    for s in c.shape[1:]:
        features *= s
    return v.view(n, -1)[:, :features].reshape(c.shape)


def variance_cost(x: torch.Tensor, group_size: int, pergroup: bool, kernel_area: int = 1) -> torch.Tensor:
    """C_n / s_n of the study: (k^2/4) G sum_groups (max - min)^2 / (features per channel); the predicted
    gradient variance of sample n at b bits is s_n C_n / (2^b - 1)^2."""
    with torch.no_grad():
        mn, mx = ranges(grouped(x.detach().float(), group_size), pergroup)
        spatial = x[0, 0].numel() if x.dim() > 2 else 1
        return kernel_area / 4 * group_size * (mx - mn).square().sum((1, 2)) / spatial


def greedy_bits(cost: torch.Tensor, ibits: int, budget: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item bits: start at `ibits` and repeatedly lower by one the item whose decrement adds the least
    predicted variance sum cost / (2^b - 1)^2 per unit weight, never below 1, until sum weight*bits <=
    budget. Each item's increments grow as its bits fall, so the greedy takes the globally smallest
    increments: one sort instead of a loop."""
    n = cost.numel()
    weights = torch.ones(n, dtype=torch.float64) if weights is None else weights.double().cpu()
    floor = float(weights.sum())
    if budget < floor - 1e-9:
        raise ValueError(f"bit budget {budget} is below 1 bit per item ({floor:g})")
    if not MIN_BITS <= ibits <= MAX_BITS:
        raise ValueError(f"ibits must be in {MIN_BITS}..{MAX_BITS}, got {ibits}")
    bits = torch.full((n,), ibits, dtype=torch.int64)
    excess = float((weights * ibits).sum()) - budget
    if excess <= 0 or ibits == 1:
        return bits
    b = torch.arange(ibits, 1, -1, dtype=torch.float64)  # decrements from b to b - 1
    step = 1 / (2 ** (b - 1) - 1) ** 2 - 1 / (2 ** b - 1) ** 2  # increasing along the row
    inc = cost.double().cpu().view(-1, 1) * step.view(1, -1) / weights.view(-1, 1)
    item = torch.arange(n).view(-1, 1).expand_as(inc).reshape(-1)
    order = torch.sort(inc.reshape(-1), stable=True).indices
    removed = torch.cumsum(weights[item[order]], 0)
    take = min(len(order), int(torch.searchsorted(removed, torch.tensor([excess - 1e-9], dtype=torch.float64)).item()) + 1)
    bits -= torch.bincount(item[order[:take]], minlength=n)
    return bits

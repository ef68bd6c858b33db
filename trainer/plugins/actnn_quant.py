"""ActNN's activation quantizer: per-sample groups, stochastic rounding, bit-packed codes, greedy bits.

Why: the activations saved for backward dominate training memory; ActNN keeps them at ~2 bits with an
unbiased rounding, so the weight gradients stay unbiased and only their variance grows (docs/actnn.md).

Each sample's activation is flattened to F features, zero-padded to a multiple of the group size G and
viewed as (N, F/G, G). The range is per (sample, group) with `pergroup`, else one min/max of the whole
tensor (the padding takes part in it, as in the study). With b_n bits for sample n and B_n = 2^b_n - 1:
code = round(clamp((x - min) * B_n / (max - min) + U(-1/2, 1/2), 0, B_n)); E[code / scale + min] = x.
min and scale are stored in bfloat16 (the study's; float32 on request for an exactly unbiased round trip),
the codes of all samples packed in one stream, each at its own width. The work is nuq's group codec
(nuq/groupquant.py: one fused C++ pass on the CPU, CUDA on GPUs); its noise is nuq's Philox stream under a
seed drawn from torch's global generator, so checkpoints (which restore that generator) resume exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nuq import groupquant
from nuq.groupquant import grouped, ranges
from nuq.packing import MAX_BITS, MIN_BITS

STORE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
SEED_RANGE = 1 << 62  # seeds drawn from torch's generator: any non-negative int64 is a Philox key


@dataclass
class Compressed:
    """What autograd keeps of one activation: the packed codes (one stream, sample n at bits[n] bits from
    byte sum_{m<n} ceil(padded features * bits[m] / 8)), per-sample bits, per-(sample, group) min and scale."""
    shape: tuple[int, ...]
    group_size: int
    codes: torch.Tensor  # uint8 stream
    bits: torch.Tensor  # uint8 (N,)
    mn: torch.Tensor  # (N, groups, 1) in the store dtype
    scale: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors to hand to ctx.save_for_backward (so saved-tensor hooks see and count them)."""
        return (self.bits, self.mn, self.scale, self.codes)

    @classmethod
    def from_tensors(cls, meta: tuple, tensors: tuple[torch.Tensor, ...]) -> "Compressed":
        """Inverse of (meta(), tensors())."""
        bits, mn, scale, codes = tensors
        return cls(*meta, codes, bits, mn, scale)

    def meta(self) -> tuple:
        """The plain Python part: shape, group size."""
        return self.shape, self.group_size

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def draw_seed() -> int:
    """A Philox key from torch's global generator (one draw per compressed activation)."""
    return int(torch.randint(SEED_RANGE, (), dtype=torch.int64))


def compress(x: torch.Tensor, bits: torch.Tensor, group_size: int, pergroup: bool,
             store: torch.dtype = torch.bfloat16) -> Compressed:
    """Stochastically round x (N, ...) to `bits[n]` bits per sample and pack the codes."""
    flat = x.detach().reshape(x.shape[0], -1)
    codes, mn, scale = groupquant.compress(flat, bits, group_size, pergroup, store, draw_seed())
    return Compressed(tuple(x.shape), group_size, codes, bits.to(codes.device, torch.uint8), mn, scale)


def decompress(c: Compressed, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dequantized activation code / scale + min (computed in float32), in the original shape."""
    features = 1
    for s in c.shape[1:]:
        features *= s
    out = groupquant.decompress(c.codes, c.bits, c.mn, c.scale, c.group_size, features)
    return out.reshape(c.shape).to(dtype)


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

"""The quantization of a model's per-parameter gradients: the bucketing plan (nuq/buckets.py), the clip
policy and the kernel.

Flags keep the paper code's names and meanings (the bucketing rule itself is written once, in nuq/buckets.py):
* `nuq_layer` set: *network-wide* quantization. All layers' gradients are flattened into one vector and
  bucketed across layer boundaries (its help text in the paper's code: "Enable Network Wide Quantization").
  Unset: each layer's gradient is bucketed on its own. The name reads the other way; the meaning is the
  paper's, so its grids reproduce.
* `nuq_ig_sm_bkts`: the final *partial* bucket of each vector passes through unquantized; full buckets are
  always quantized, and a vector smaller than one bucket passes through whole.
* `nuq_clip`: TernGrad clipping. Before snapping, each bucket's values are clipped to +-2.5 standard
  deviations of that bucket (the same as clipping the normalised values at 2.5 of their standard deviations,
  since normalising is a scale); the norm is then taken of the clipped values.
* method `none`: identity (full precision).

Random stream: one call with (seed, offset) uses stream positions offset .. offset + total_numel - 1, the
gradients taken in list order (`positions_used`), whichever bucketing is chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from nuq import kernel
from nuq.buckets import Piece, plan
from nuq.levels import bits_per_coordinate as index_bits
from nuq.levels import get_method

CLIP_STDS = 2.5
NORM_BITS = 32  # one float32 norm per bucket


@dataclass(frozen=True)
class QuantConfig:
    """The quantization options of a run (names as in trainer/options.py)."""
    method: str = "q"
    bits: int = 4
    bucket_size: int = 1024
    network_wide: bool = False  # nuq_layer
    ig_sm_bkts: bool = False
    clip: bool = False
    mul: float = 0.5

    @classmethod
    def from_opt(cls, opt: Mapping[str, Any]) -> "QuantConfig":
        cfg = cls(method=opt.get("nuq_method", cls.method), bits=int(opt.get("nuq_bits", cls.bits)),
                  bucket_size=int(opt.get("nuq_bucket_size", cls.bucket_size)),
                  network_wide=bool(opt.get("nuq_layer", False)), ig_sm_bkts=bool(opt.get("nuq_ig_sm_bkts", False)),
                  clip=bool(opt.get("nuq_clip", False)), mul=float(opt.get("nuq_mul", cls.mul)))
        get_method(cfg.method)  # a clear error for an unknown method
        if cfg.bucket_size < 1:
            raise ValueError(f"nuq_bucket_size must be >= 1, got {cfg.bucket_size}")
        return cfg

    @property
    def norm(self) -> str:
        return get_method(self.method).norm

    def init_levels(self) -> torch.Tensor:
        return get_method(self.method).init_levels(self.bits, self.mul)

    def plan(self, sizes: list[int]) -> list[Piece]:
        """The bucketing plan of gradients with these sizes under this config's nuq_layer and nuq_ig_sm_bkts."""
        return plan(sizes, self.bucket_size, self.network_wide, self.ig_sm_bkts)


def terngrad_clip(v: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """Clip each bucket of flat `v` to +-2.5 standard deviations (population std of that bucket)."""
    n = v.numel()
    nb = -(-n // bucket_size)
    x = F.pad(v.float(), (0, nb * bucket_size - n)).view(nb, bucket_size)
    counts = torch.full((nb,), float(bucket_size), device=v.device)
    counts[-1] = n - (nb - 1) * bucket_size
    mean = x.sum(dim=1) / counts
    mask = torch.ones_like(x)
    mask.view(-1)[n:] = 0
    var = (((x - mean[:, None]) * mask) ** 2).sum(dim=1) / counts
    c = (CLIP_STDS * var.sqrt())[:, None]
    return torch.maximum(torch.minimum(x, c), -c).reshape(-1)[:n].to(v.dtype)


def quantize_vector(v: torch.Tensor, levels: torch.Tensor, cfg: QuantConfig, seed: int, offset: int) -> torch.Tensor:
    """Quantize one flat vector under the tail and clip policies; element i uses stream position offset + i."""
    n = v.numel()
    body = cfg.plan([n])[0].cut
    if body == 0:
        return v.clone()
    head = v[:body]
    if cfg.clip:
        head = terngrad_clip(head, cfg.bucket_size)
    q = kernel.quantize(head, levels, cfg.bucket_size, cfg.norm, seed, offset)
    return q if body == n else torch.cat([q, v[body:]])


def quantize_grads(grads: list[torch.Tensor], levels: torch.Tensor, cfg: QuantConfig, seed: int,
                   offset: int) -> list[torch.Tensor]:
    """Quantize-dequantize a model's gradients (one tensor per parameter); shapes and dtypes are kept."""
    if not get_method(cfg.method).quantizes:
        return [g.clone() for g in grads]
    if not grads:
        return []
    levels = levels.to(grads[0].device)
    if cfg.network_wide:
        flat = torch.cat([g.reshape(-1) for g in grads])
        q = quantize_vector(flat, levels, cfg, seed, offset)
        return [part.view_as(g) for part, g in zip(q.split([g.numel() for g in grads]), grads)]
    if cfg.clip or len({g.dtype for g in grads}) > 1:
        out, pos = [], offset
        for g in grads:
            out.append(quantize_vector(g.reshape(-1), levels, cfg, seed, pos).view_as(g))
            pos += g.numel()
        return out
    # each parameter its own vector, all in one kernel call: quantize_vector's values, layer by layer
    pieces = [(p.start, p.cut) for p in cfg.plan([g.numel() for g in grads])]
    flat = torch.cat([g.reshape(-1) for g in grads])
    q = kernel.quantize_pieces(flat, levels, cfg.bucket_size, cfg.norm, seed, offset, pieces)
    return [part.view_as(g).to(g.dtype) for part, g in zip(q.split([g.numel() for g in grads]), grads)]


def positions_used(grads: list[torch.Tensor]) -> int:
    """Stream positions one `quantize_grads` call consumes (give the next call offset + this)."""
    return sum(g.numel() for g in grads)


def bits_per_coordinate(sizes: list[int], levels: torch.Tensor, cfg: QuantConfig) -> float:
    """Average bits sent per gradient coordinate: ceil(log2 #levels) per quantized value, 32 per bucket norm,
    32 per value passed through unquantized (all of them for `none`)."""
    total = sum(sizes)
    if total == 0:
        return 0.0
    if not get_method(cfg.method).quantizes:
        return float(NORM_BITS)
    bits = 0
    for p in cfg.plan(list(sizes)):
        bits += p.quantized * index_bits(levels) + -(-p.quantized // cfg.bucket_size) * NORM_BITS + p.raw * NORM_BITS
    return bits / total

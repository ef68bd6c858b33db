"""The pure-PyTorch quantize-dequantize: clear and slow, the oracle every kernel is tested against.

Inputs are already checked by `nuq.kernel` (flat contiguous float32 `x`, float32 `levels`). The exact
arithmetic, which the C++ and CUDA kernels repeat operation for operation so results agree bitwise:

1. Buckets are consecutive runs of `bucket_size` values; the last may be partial.
2. Bucket norm, float32: `linf` = max |x|; `l2` = sqrt of the sum of squares in float64, summed in a
   fixed order: with L = min(256, the smallest power of two >= bucket_size) lanes, element t of a bucket
   goes to lane t % L; each lane sums its squares in element order; the L lane sums are then added as a
   pairwise tree (lane 2i + lane 2i+1, repeated); sqrt in float64, rounded once to float32, saturated at the
   largest float32 where a finite root exceeds it (values near 3e38: the float64 sum is fine, its float32
   root is not; every |x| is still <= the norm, so a finite bucket gives finite values). (The shape suits
   CPU SIMD and a CUDA block alike.)
3. inv = 1 / norm in float32 (0 for a zero bucket, which therefore gives zeros, never NaN).
4. u = clamp(x * inv, levels[0], levels[-1]) in float32 (values beyond the outer levels are clipped).
5. j = number of inner levels levels[1..K-2] that are <= u (so levels[j] <= u <= levels[j+1]; 0 for a NaN u,
   as from an infinite value in a bucket, whose norm is then infinite).
6. With r the element's uniform from `nuq.philox`, take j+1 iff r * (levels[j+1] - levels[j]) < u - levels[j]
   (float32), i.e. with probability (u - l_j)/(l_{j+1} - l_j) up to 2^-24: the result is unbiased.
7. Dequantized value = levels[index] * norm (float32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nuq.philox import uniforms

MAX_LANES = 256  # the fixed summation order of the L2 norm (see the module docstring)
FLOAT32_MAX = torch.finfo(torch.float32).max  # where a finite L2 norm saturates


def norm_lanes(bucket_size: int) -> int:
    """Lanes of the L2 sum: a power of two, at most MAX_LANES, at least bucket_size when smaller."""
    lanes = 1
    while lanes < MAX_LANES and lanes < bucket_size:
        lanes *= 2
    return lanes


def num_buckets(n: int, bucket_size: int) -> int:
    return -(-n // bucket_size)


def bucket_norms(x: torch.Tensor, bucket_size: int, norm: str) -> torch.Tensor:
    """float32 norm of each bucket of flat `x` (zero-padded tail)."""
    nb = num_buckets(x.numel(), bucket_size)
    buckets = F.pad(x, (0, nb * bucket_size - x.numel())).view(nb, bucket_size)
    if norm == "linf":
        return buckets.abs().amax(dim=1)
    nl = norm_lanes(bucket_size)
    width = num_buckets(bucket_size, nl) * nl
    sq = F.pad(buckets.double().square(), (0, width - bucket_size)).view(nb, width // nl, nl)
    lanes = sq.cumsum(dim=1)[:, -1, :]  # cumsum: a strictly sequential sum per lane
    while lanes.shape[1] > 1:
        lanes = lanes[:, 0::2] + lanes[:, 1::2]
    root = lanes[:, 0].sqrt()
    return torch.where(root < torch.inf, root.clamp(max=FLOAT32_MAX), root).to(torch.float32)


def _per_element(values: torch.Tensor, bucket_size: int, n: int) -> torch.Tensor:
    return values.repeat_interleave(bucket_size)[:n]


def quantize_indices(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str,
                     seed: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 level index per element, float32 norm per bucket)."""
    n = x.numel()
    norms = bucket_norms(x, bucket_size, norm)
    inv = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    u = torch.clamp(x * _per_element(inv, bucket_size, n), levels[0], levels[-1])
    j = torch.searchsorted(levels[1:-1].contiguous(), u, right=True)
    j = torch.where(torch.isnan(u), 0, j)  # no level is <= NaN (searchsorted would sort NaN last)
    r = uniforms(seed, offset, n, x.device)
    gaps = levels[1:] - levels[:-1]
    up = r * gaps[j] < u - levels[j]
    return (j + up).to(torch.uint8), norms


def dequantize_indices(indices: torch.Tensor, norms: torch.Tensor, levels: torch.Tensor,
                       bucket_size: int) -> torch.Tensor:
    """float32 values levels[index] * bucket norm."""
    return levels[indices.long()] * _per_element(norms, bucket_size, indices.numel())


def quantize(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str,
             seed: int, offset: int) -> torch.Tensor:
    """Quantize-dequantize flat float32 `x`."""
    idx, norms = quantize_indices(x, levels, bucket_size, norm, seed, offset)
    return dequantize_indices(idx, norms, levels, bucket_size)

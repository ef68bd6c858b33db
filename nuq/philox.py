"""Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) in torch int64 ops.

This is the random stream of every quantize kernel, written so the pure-PyTorch reference computes the
exact words the C++ and CUDA kernels compute. The stream, precisely:

* key = (seed & 0xffffffff, seed >> 32) for 0 <= seed < 2^63;
* element with global index g = offset + i (i: its index in the flattened tensor) uses the Philox block
  with counter (c0, c1, c2, c3) = (q & 0xffffffff, q >> 32, 0, 0) where q = g >> 2, and takes output
  word number g & 3 of that block (four consecutive elements share one block);
* its uniform is r = (word >> 8) * 2^-24 in [0, 1) (the top 24 bits, exact in float32).

All values are uint32 held in int64 tensors; 32x32-bit products are split into 16-bit halves so no
intermediate leaves int64.
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
ROUNDS = 10


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of the 64-bit product a * b, for a constant a < 2^32 and uint32 b."""
    p_lo = a * (b & 0xFFFF)  # < 2^48
    p_hi = a * (b >> 16)  # < 2^48; a*b = p_hi * 2^16 + p_lo
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & MASK32
    hi = (p_hi + (p_lo >> 16)) >> 16
    return hi, lo


def philox4x32(counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
               key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """The four output words of Philox4x32-10 for each counter (int64 tensors holding uint32)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(ROUNDS):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key of a seed."""
    return seed & MASK32, (seed >> 32) & MASK32


def random_words(seed: int, offset: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The uint32 word (in int64) of elements offset .. offset+n-1 of the stream described above."""
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    first, last = offset >> 2, (offset + n - 1) >> 2
    q = torch.arange(first, last + 1, dtype=torch.int64, device=device)
    zero = torch.zeros_like(q)
    words = torch.stack(philox4x32((q & MASK32, q >> 32, zero, zero), seed_key(seed)), dim=1).reshape(-1)
    start = offset - 4 * first
    return words[start:start + n]


def uniforms(seed: int, offset: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 uniforms in [0, 1) from the top 24 bits of each element's word."""
    return (random_words(seed, offset, n, device) >> 8).to(torch.float32) * (2.0 ** -24)

"""Bit packing of quantization level indices: b-bit values (b in 1..8) stored densely in uint8 bytes.

Why: a gradient quantized to 2^b levels carries b bits per coordinate; sending each index as a whole
byte would waste 8/b of the wire. The layout is one little-endian bit stream: value i occupies bits
[i*b, (i+1)*b) of the stream, bit 0 being the least significant bit of byte 0. So 8 values always fill
exactly b bytes, and the packed length of n values is ceil(n*b/8) bytes.

`pack`/`unpack` use the ops torch.ops.nuq.pack/unpack of the C++ extension `nuq._pack` for CPU tensors when
it is built (fast, OpenMP; see `nuq.ops`) and vectorised torch ops otherwise (any device, e.g. CUDA); both
produce the same bytes.
"""
from __future__ import annotations

import sys

import torch

from nuq import ops  # registers torch.ops.nuq.pack/unpack where `python setup.py build_ext --inplace` built them

_ext = ops._pack  # None where the extension is not built

MIN_BITS, MAX_BITS = 1, 8


def bits_for_levels(num_levels: int) -> int:
    """Bits needed to index `num_levels` levels: ceil(log2(num_levels)), at least 1."""
    if num_levels < 1 or num_levels > 2 ** MAX_BITS:
        raise ValueError(f"num_levels must be in 1..{2 ** MAX_BITS} to fit uint8 indices, got {num_levels}")
    return max(1, (num_levels - 1).bit_length())


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that `n` values of `bits` bits occupy: ceil(n*bits/8)."""
    _check_bits(bits)
    if n < 0:
        raise ValueError(f"number of values must be >= 0, got {n}")
    return (n * bits + 7) // 8


def has_extension() -> bool:
    """True when the C++ pack/unpack extension is importable."""
    return _ext is not None


def pack(indices: torch.Tensor, bits: int, use_ext: bool | None = None) -> torch.Tensor:
    """Pack a 1-D uint8 tensor of values < 2**bits into ceil(n*bits/8) uint8 bytes (layout: module doc).

    `use_ext`: None picks the C++ extension for CPU tensors when built; False forces torch ops.
    Raises ValueError if a value does not fit in `bits` bits (it would corrupt its neighbours).
    """
    _check_bits(bits)
    _check_uint8_1d(indices, "indices")
    if _pick_ext(indices, use_ext):
        return torch.ops.nuq.pack.default(indices.contiguous(), bits=bits)
    return _pack_torch(indices, bits)


def unpack(packed: torch.Tensor, bits: int, n: int, use_ext: bool | None = None) -> torch.Tensor:
    """Inverse of `pack`: the first `n` values of `bits` bits from the uint8 bytes `packed`."""
    _check_bits(bits)
    _check_uint8_1d(packed, "packed")
    need = packed_nbytes(n, bits)
    if packed.numel() < need:
        raise ValueError(f"{n} values of {bits} bits need {need} bytes, got {packed.numel()}")
    if _pick_ext(packed, use_ext):
        return torch.ops.nuq.unpack.default(packed.contiguous(), bits=bits, n=n)
    return _unpack_torch(packed, bits, n)


def relu_mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(x), the bits of x > 0 packed 1 per value): one pass with the C++ op for contiguous float32 CPU
    tensors, torch ops otherwise (same values, same bytes). Why: a ReLU's backward needs only that mask."""
    if _ext is not None and x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
        out, mask = torch.ops.nuq.relu_mask.default(x)
        return out, mask
    out = x.clamp(min=0)
    return out, pack((out > 0).reshape(-1).to(torch.uint8), 1)


def mask_mul(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """grad * the 0/1 values of a relu_mask mask (in grad's shape)."""
    if _ext is not None and grad.device.type == "cpu" and grad.dtype == torch.float32 and grad.is_contiguous() \
            and mask.device.type == "cpu":
        return torch.ops.nuq.mask_mul.default(grad, mask)
    return grad * unpack(mask, 1, grad.numel()).view(grad.shape)


def _pick_ext(t: torch.Tensor, use_ext: bool | None) -> bool:
    if use_ext is None:
        return _ext is not None and t.device.type == "cpu"
    if use_ext and (_ext is None or t.device.type != "cpu"):
        raise RuntimeError("the C++ pack extension needs a CPU tensor and `python setup.py build_ext --inplace`")
    return use_ext


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


def _check_uint8_1d(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
        what = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a 1-D torch.uint8 tensor, got {what}")


# --- torch fallback: groups of 8 values <-> one int64 word whose low `bits` bytes are the packed group.

def _shifts(bits: int, device: torch.device) -> torch.Tensor:
    return torch.arange(8, dtype=torch.int64, device=device) * bits


def _pack_torch(indices: torch.Tensor, bits: int) -> torch.Tensor:
    n = indices.numel()
    if bits < 8 and n and bool((indices >> bits).any()):
        bad = int(indices.max())
        raise ValueError(f"index {bad} does not fit in {bits} bits (max {2 ** bits - 1})")
    if bits == 8:
        return indices.clone()
    groups = (n + 7) // 8
    padded = torch.zeros(groups * 8, dtype=torch.uint8, device=indices.device)
    padded[:n] = indices
    # The bit fields do not overlap, so the sum is their bitwise OR.
    words = (padded.view(groups, 8).to(torch.int64) << _shifts(bits, indices.device)).sum(1)
    assert sys.byteorder == "little", "the packed layout assumes a little-endian host"
    return words.view(torch.uint8).view(groups, 8)[:, :bits].reshape(-1)[: packed_nbytes(n, bits)].clone()


def _unpack_torch(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    if bits == 8:
        return packed[:n].clone()
    groups = (n + 7) // 8
    nbytes = min(packed.numel(), groups * bits)
    wide = torch.zeros(groups, 8, dtype=torch.uint8, device=packed.device)
    rows = torch.zeros(groups * bits, dtype=torch.uint8, device=packed.device)
    rows[:nbytes] = packed[:nbytes]
    wide[:, :bits] = rows.view(groups, bits)
    assert sys.byteorder == "little", "the packed layout assumes a little-endian host"
    words = wide.view(torch.int64)  # [groups, 1]
    values = (words >> _shifts(bits, packed.device)) & (2 ** bits - 1)
    return values.reshape(-1)[:n].to(torch.uint8)

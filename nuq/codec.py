"""The wire format of one quantized gradient vector: what a rank sends instead of float32 values.

A message is one flat uint8 tensor: the float32 norm of each bucket (4 bytes each, first, so they stay
4-byte aligned), then the level indices bit-packed with `bits` bits each (`nuq.packing`). For n values in
buckets of `bucket_size` that is exactly ceil(n*bits/8) + 4*ceil(n/bucket_size) bytes.

`decode(encode(x, ...))` equals `nuq.kernel.quantize(x, ...)` bit for bit for the same (seed, offset):
both are quantize_indices + dequantize_indices of the same random stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nuq import checks, kernel, packing


@dataclass(frozen=True)
class Layout:
    """Sizes of the message for n values: where the norms end and the packed indices start."""
    n: int
    bits: int
    bucket_size: int

    @property
    def nbuckets(self) -> int:
        return -(-self.n // self.bucket_size)

    @property
    def norm_bytes(self) -> int:
        return 4 * self.nbuckets

    @property
    def index_bytes(self) -> int:
        return packing.packed_nbytes(self.n, self.bits)

    @property
    def nbytes(self) -> int:
        return message_nbytes(self.n, self.bits, self.bucket_size)

    @property
    def bits_per_value(self) -> float:
        """Bits on the wire per coordinate, norms included."""
        return 8.0 * self.nbytes / self.n if self.n else 0.0


def message_nbytes(n: int, bits: int, bucket_size: int) -> int:
    """Bytes of the message of n values (`Layout.nbytes` without building one: per layer, per step)."""
    return 4 * -(-n // bucket_size) + (n * bits + 7) // 8


def layout(n: int, levels: torch.Tensor, bucket_size: int) -> Layout:
    """The message layout of n values quantized to `levels` (ceil(log2(#levels)) bits per index)."""
    checks.check_bucket_size(bucket_size)
    return Layout(n, packing.bits_for_levels(int(levels.numel())), bucket_size)


def encode(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str, seed: int, offset: int,
           out: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """Quantize flat `x` and pack it into a uint8 message (layout: module doc).

    `out` (uint8, layout(...).nbytes) receives the message in place, e.g. a row of a gather buffer.
    `backend` is passed to `nuq.kernel` (None: by device; 'reference': the pure-PyTorch oracle).
    """
    lay = layout(x.numel(), levels, bucket_size)
    if out is None:
        out = torch.empty(lay.nbytes, dtype=torch.uint8, device=x.device)
    elif out.dtype != torch.uint8 or out.numel() != lay.nbytes:
        raise ValueError(f"out must be a uint8 tensor of {lay.nbytes} bytes, got {out.dtype} of {out.numel()}")
    if out.is_contiguous() and kernel.fused_codec_supported(x.numel(), x.device, bucket_size, backend):
        return kernel.encode_packed(x, levels, bucket_size, norm, seed, offset, out)  # one pass, same bytes
    idx, norms = kernel.quantize_indices(x, levels, bucket_size, norm, seed, offset, backend=backend)
    out[: lay.norm_bytes] = norms.to(torch.float32).view(torch.uint8)
    out[lay.norm_bytes:] = packing.pack(idx, lay.bits)
    return out


def decode(message: torch.Tensor, n: int, levels: torch.Tensor, bucket_size: int,
           backend: str | None = None, add_to: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [n] values of a message made by `encode` with the same n, levels and bucket_size.
    `add_to` (float32 [n], on the message's device): `add_to += values`, in one pass where the fused decode
    runs (the same bits), and returns it: what summing the workers' messages needs."""
    lay = layout(n, levels, bucket_size)
    if message.dtype != torch.uint8 or message.dim() != 1 or message.numel() != lay.nbytes:
        raise ValueError(f"a message of {n} values at {lay.bits} bits in buckets of {bucket_size} is "
                         f"{lay.nbytes} uint8 bytes, got {message.dtype} {tuple(message.shape)}")
    if add_to is not None and (add_to.dtype != torch.float32 or add_to.shape != (n,)
                               or add_to.device != message.device):
        raise ValueError(f"add_to must be a float32 tensor of shape ({n},) on {message.device}, got "
                         f"{add_to.dtype} {tuple(add_to.shape)} on {add_to.device}")
    if message.is_contiguous() and kernel.fused_decode_supported(n, message.device, levels, bucket_size, backend) \
            and (add_to is None or add_to.is_contiguous()):
        return kernel.decode_packed(message, n, levels, bucket_size, add_to=add_to)  # one pass, same bits
    norms = message[: lay.norm_bytes].clone().view(torch.float32)  # clone: the row may be unaligned
    idx = packing.unpack(message[lay.norm_bytes:], lay.bits, n)
    values = kernel.dequantize_indices(idx, norms, levels, bucket_size, backend=backend)
    return values if add_to is None else add_to.add_(values)

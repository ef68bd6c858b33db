"""The compiled ops torch.ops.nuq.* and their fake (shape-only) implementations.

csrc/quant/quant.cpp and csrc/pack/pack.cpp register each op with torch.library: a schema with named, typed
arguments (the ints keyword-only), a CPU kernel, and a CUDA kernel in CUDA builds (run under a device guard
in torch's current stream). Importing `nuq._quant` / `nuq._pack` registers them; this module, which their
library names as its Python home, adds the fake implementations that let `torch.compile` and
`torch.library.opcheck` trace the ops without running them. `nuq.kernel` and `nuq.packing` call the ops.
"""
from __future__ import annotations

import torch

try:
    from nuq import _quant
except ImportError:  # not built: nuq.kernel raises a clear error when a kernel is needed
    _quant = None
try:
    from nuq import _pack
except ImportError:  # not built: nuq.packing falls back to torch ops
    _pack = None


def _num_buckets(n, bucket_size: int):
    return (n + bucket_size - 1) // bucket_size  # (n, bucket_size < 2^62 here: no overflow in Python)


def _packed_bytes(n, bits: int):
    return (n * bits + 7) // 8


if _quant is not None:
    @torch.library.register_fake("nuq::quantize")
    def _quantize(x, levels, *, bucket_size, linf, seed, offset, num_threads):
        return torch.empty_like(x)

    @torch.library.register_fake("nuq::quantize_indices")
    def _quantize_indices(x, levels, *, bucket_size, linf, seed, offset, num_threads):
        return (x.new_empty(x.numel(), dtype=torch.uint8),
                x.new_empty(_num_buckets(x.numel(), bucket_size)))

    @torch.library.register_fake("nuq::dequantize_indices")
    def _dequantize_indices(indices, norms, levels, *, bucket_size, num_threads):
        return norms.new_empty(indices.numel())

    @torch.library.register_fake("nuq::decode")
    def _decode(message, levels, *, n, bucket_size, num_threads):
        return levels.new_empty(n)

    @torch.library.register_fake("nuq::group_compress")
    def _group_compress(x, bits, *, group_size, pergroup, store, seed, offset):
        groups = _num_buckets(x.shape[1], group_size)
        nbytes = torch.library.get_ctx().new_dynamic_size()  # depends on the bit widths' values
        return (x.new_empty(nbytes, dtype=torch.uint8), x.new_empty(x.shape[0], groups, 1, dtype=store),
                x.new_empty(x.shape[0], groups, 1, dtype=store))

    @torch.library.register_fake("nuq::group_ranges")
    def _group_ranges(x, *, group_size):
        groups = _num_buckets(x.shape[1], group_size)
        return x.new_empty(x.shape[0], groups, 1), x.new_empty(x.shape[0], groups, 1)

    @torch.library.register_fake("nuq::group_decompress")
    def _group_decompress(codes, bits, mn, scale, *, group_size, features):
        return codes.new_empty(bits.shape[0], features, dtype=torch.float32)

    def _writes_only(*args, **kwargs) -> None:
        """Ops that write into a tensor they are given (marked (a!) in their schema) and return nothing."""

    for _name in ("quantize_out", "encode", "decode_add", "quantize_pieces", "encode_pieces", "decode_pieces_add"):
        torch.library.register_fake(f"nuq::{_name}", _writes_only)

if _pack is not None:
    @torch.library.register_fake("nuq::pack")
    def _pack_fake(indices, *, bits):
        return indices.new_empty(_packed_bytes(indices.numel(), bits))

    @torch.library.register_fake("nuq::unpack")
    def _unpack_fake(packed, *, bits, n):
        return packed.new_empty(n)

    @torch.library.register_fake("nuq::relu_mask")
    def _relu_mask_fake(x):
        return torch.empty_like(x), x.new_empty(_packed_bytes(x.numel(), 1), dtype=torch.uint8)

    @torch.library.register_fake("nuq::mask_mul")
    def _mask_mul_fake(grad, mask):
        return torch.empty_like(grad)

"""The quantize-dequantize API every caller uses; it checks inputs and dispatches by the tensor's device.

Backends are a registry: 'cpu' and 'cuda' run the compiled ops torch.ops.nuq.* of the extension `nuq._quant`
(C++/OpenMP, CUDA; registered with torch.library, see `nuq.ops`), 'reference' runs the pure-PyTorch oracle `nuq.reference` (any device). All three compute the same
arithmetic and the same Philox stream (see `nuq.reference` and `nuq.philox`), so a given
(seed, offset) gives bit-identical results on every backend and thread count.

Random offsets: element i of `x` uses stream position offset + i. Callers that quantize several tensors
with one seed give them disjoint ranges (offset += numel) so no two elements share a random number.
"""
from __future__ import annotations

import contextlib
import functools
import os
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch

from nuq import checks, reference


@dataclass(frozen=True)
class Backend:
    quantize: Callable[..., torch.Tensor]
    quantize_indices: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    dequantize_indices: Callable[..., torch.Tensor]


_loaded: ModuleType | None = None  # nuq._quant once imported (import_module costs ~5 us a call)


def _extension(device_type: str) -> ModuleType:
    """nuq._quant (its torch.ops.nuq ops registered, their fakes too), or a clear error saying how to build
    it for this device."""
    global _loaded
    try:
        if _loaded is None:
            ext = importlib.import_module("nuq._quant")
            importlib.import_module("nuq.ops")
            _loaded = ext
        ext = _loaded
    except ImportError as err:
        raise RuntimeError(
            f"the compiled kernel nuq._quant is not built ({err}); build it with "
            f"`python setup.py build_ext --inplace`, or pass backend='reference' for the slow oracle") from None
    if device_type == "cuda" and not ext.has_cuda():
        raise RuntimeError("nuq._quant was built without CUDA; rebuild on a machine with the CUDA toolkit and "
                           "a CUDA build of torch, or pass backend='reference'")
    return ext


def _threads(num_threads: int | None) -> int:
    return torch.get_num_threads() if num_threads is None else max(1, int(num_threads))


def _ops(device_type: str = "cpu"):
    """torch.ops.nuq once nuq._quant is loaded (the ops guard the device and take its current stream)."""
    _extension(device_type)
    return torch.ops.nuq


@functools.cache  # one Backend per device type: building its closures cost ~3 us a call
def _compiled(device_type: str) -> Backend:
    def q(x, levels, bucket_size, norm, seed, offset, num_threads=None, out=None):
        kw = dict(bucket_size=bucket_size, linf=norm == "linf", seed=seed, offset=offset,
                  num_threads=_threads(num_threads))
        if out is None:
            return _ops(device_type).quantize.default(x, levels, **kw)
        _ops(device_type).quantize_out.default(out, x, levels, **kw)
        return out

    def qi(x, levels, bucket_size, norm, seed, offset, num_threads=None):
        return tuple(_ops(device_type).quantize_indices.default(
            x, levels, bucket_size=bucket_size, linf=norm == "linf", seed=seed, offset=offset,
            num_threads=_threads(num_threads)))

    def dq(indices, norms, levels, bucket_size, num_threads=None):
        return _ops(device_type).dequantize_indices.default(indices, norms, levels, bucket_size=bucket_size,
                                                            num_threads=_threads(num_threads))
    return Backend(q, qi, dq)


@functools.cache
def _reference() -> Backend:
    def q(x, levels, bucket_size, norm, seed, offset, num_threads=None, out=None):
        res = reference.quantize(x, levels, bucket_size, norm, seed, offset)
        return res if out is None else out.copy_(res)

    def qi(x, levels, bucket_size, norm, seed, offset, num_threads=None):
        return reference.quantize_indices(x, levels, bucket_size, norm, seed, offset)

    def dq(indices, norms, levels, bucket_size, num_threads=None):
        return reference.dequantize_indices(indices, norms, levels, bucket_size)
    return Backend(q, qi, dq)


BACKENDS: dict[str, Callable[[], Backend]] = {
    "cpu": lambda: _compiled("cpu"),
    "cuda": lambda: _compiled("cuda"),
    "reference": _reference,
}


CPU_KERNELS = ("auto", "avx512", "avx2", "generic")  # values of NUQ_CPU_KERNEL and forced_cpu_kernel


def cpu_kernel(levels: torch.Tensor) -> str:
    """Which compiled CPU kernel a call with these (float32) levels runs: 'avx512' (hand-vectorised, on CPUs
    with AVX-512, for 2..256 levels), 'avx2' (CPUs with AVX2, FMA and BMI2) or 'generic'. All give identical
    bits; this is for benchmarks."""
    return _extension("cpu").cpu_kernel(levels.detach().to("cpu", torch.float32).contiguous())


@contextlib.contextmanager
def forced_cpu_kernel(name: str):
    """Within the block the CPU backend (and nuq.groupquant's codec) starts its choice at kernel `name` (one of
    CPU_KERNELS; 'avx512' still falls back for level sets it does not take), process-wide, for tests and
    benchmarks that compare the paths; then back to $NUQ_CPU_KERNEL (default 'auto'). Raises ValueError for a
    path this CPU lacks."""
    if name not in CPU_KERNELS:
        raise ValueError(f"cpu kernel must be one of {', '.join(CPU_KERNELS)}, got {name!r}")
    ext = _extension("cpu")
    try:
        ext.set_cpu_kernel(name)
    except RuntimeError as err:
        raise ValueError(str(err).splitlines()[0]) from None
    try:
        yield
    finally:
        ext.set_cpu_kernel(os.environ.get("NUQ_CPU_KERNEL") or "auto")


def only_generic_cpu_kernel():
    """forced_cpu_kernel('generic'): the portable kernel even where a vectorised one runs."""
    return forced_cpu_kernel("generic")


def _backend(name: str | None, device: torch.device) -> Backend:
    key = device.type if name is None else name
    if key not in BACKENDS:
        raise ValueError(f"no quantize backend {key!r} (device {device}); known: {', '.join(BACKENDS)}")
    if key in ("cpu", "cuda") and key != device.type:
        raise ValueError(f"backend {key!r} cannot run on a tensor on {device}")
    return BACKENDS[key]()


def _prepare(x, levels, bucket_size, norm, seed, offset):
    xf = checks.check_x(x)
    lv = checks.check_levels(levels, xf.device)
    checks.check_args(bucket_size, norm, seed, offset, xf.numel())
    return xf.reshape(-1), lv


def quantize(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str = "l2", seed: int = 0,
             offset: int = 0, *, backend: str | None = None, num_threads: int | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize `x` (any shape; float32/16/bf16, computed in float32) in buckets of
    `bucket_size` consecutive values of its flattened form, each (a partial tail too) with its own norm.
    Returns x's shape and dtype. `num_threads` (CPU) defaults to torch.get_num_threads().
    `out`: a contiguous float32 tensor with x's number of values on x's device to write into (no
    allocation); then the result is `out` viewed in x's shape, in float32."""
    flat, lv = _prepare(x, levels, bucket_size, norm, seed, offset)
    if out is not None:
        checks.check_out(out, flat)
    if flat.numel() == 0:
        return torch.empty_like(x) if out is None else out.view(x.shape)
    dest = None if out is None else out.view(-1)
    res = _backend(backend, flat.device).quantize(flat, lv, bucket_size, norm, seed, offset, num_threads, dest)
    return res.view(x.shape) if out is not None else res.view(x.shape).to(x.dtype)


def quantize_pieces(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str, seed: int, offset: int,
                    pieces: list[tuple[int, int]], *, backend: str | None = None,
                    num_threads: int | None = None) -> torch.Tensor:
    """`quantize` of several pieces of flattened x, each its own vector (buckets restart at its start):
    piece (start, end), in order and not overlapping, gets the values of `quantize(x[start:end], ...,
    offset + start)`; values outside every piece pass through. Returns float32 [n]. On the CPU one kernel
    call (a model's layers: ~30 us of checks saved per layer); elsewhere one call per piece."""
    flat, lv = _prepare(x, levels, bucket_size, norm, seed, offset)
    gaps = sum(end - start for start, end in pieces) != flat.numel()
    out = flat.clone() if gaps else torch.empty_like(flat)  # (flat may be x itself: never written)
    if (flat.device.type if backend is None else backend) == "cpu" and flat.device.type == "cpu":
        table = torch.tensor(pieces, dtype=torch.int64).reshape(-1, 2)
        try:
            _ops().quantize_pieces.default(out, flat, lv, table, bucket_size=bucket_size, linf=norm == "linf",
                                           seed=seed, offset=offset, num_threads=_threads(num_threads))
            return out
        except RuntimeError as err:
            raise ValueError(str(err).splitlines()[0]) from None
    last = 0
    for start, end in pieces:
        if not last <= start <= end <= flat.numel():
            raise ValueError(f"piece ({start}, {end}) is out of order or outside x's {flat.numel()} values")
        if end > start:
            quantize(flat[start:end], lv, bucket_size, norm, seed, offset + start, backend=backend,
                     num_threads=num_threads, out=out[start:end])
        last = end
    return out


def quantize_indices(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str = "l2", seed: int = 0,
                     offset: int = 0, *, backend: str | None = None,
                     num_threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoded form: (uint8 level index per element of flattened x [n], float32 norm per bucket
    [ceil(n / bucket_size)]). Same random choices as `quantize` for the same (seed, offset)."""
    flat, lv = _prepare(x, levels, bucket_size, norm, seed, offset)
    if flat.numel() == 0:
        return (torch.empty(0, dtype=torch.uint8, device=flat.device),
                torch.empty(0, dtype=torch.float32, device=flat.device))
    return _backend(backend, flat.device).quantize_indices(flat, lv, bucket_size, norm, seed, offset, num_threads)


def fused_codec_supported(n: int, device: torch.device, bucket_size: int, backend: str | None = None) -> bool:
    """Whether n values on `device` can be encoded (`encode_packed`) and decoded (`decode_packed`) in one
    pass: CPU, the compiled kernel, and buckets that start on whole bytes (bucket_size % 8 == 0, or one
    bucket)."""
    if backend not in (None, "cpu") or torch.device(device).type != "cpu" or not isinstance(bucket_size, int):
        return False
    if bucket_size < 1 or (bucket_size % 8 and n > bucket_size):
        return False
    try:
        return hasattr(_ops(), "encode")
    except RuntimeError:
        return False


def encode_packed(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str, seed: int, offset: int,
                  out: torch.Tensor, *, num_threads: int | None = None) -> torch.Tensor:
    """Quantize flat x straight into the wire message `out` (uint8: the float32 bucket norms, then the
    indices packed ceil(log2(#levels)) bits each; nuq.codec's layout), with the random choices of
    `quantize_indices` for the same (seed, offset). One pass: no index tensor, no separate packing.
    Only where `fused_codec_supported`."""
    flat, lv = _prepare(x, levels, bucket_size, norm, seed, offset)
    if not fused_codec_supported(flat.numel(), flat.device, bucket_size):
        raise ValueError(f"encode_packed needs a CPU tensor and bucket_size % 8 == 0 (got {bucket_size} for "
                         f"{flat.numel()} values on {flat.device}); use quantize_indices and nuq.packing")
    if flat.numel() == 0:
        return out
    _ops().encode.default(out, flat, lv, bucket_size=bucket_size, linf=norm == "linf", seed=seed, offset=offset,
                          num_threads=_threads(num_threads))
    return out


def longest_piece(pieces: list[tuple[int, ...]]) -> int:
    """The most values in one (start, end, ...) piece: the fused codec supports all pieces where it supports
    the longest."""
    return max((p[1] - p[0] for p in pieces), default=0)


def encode_pieces_packed(x: torch.Tensor, levels: torch.Tensor, bucket_size: int, norm: str, seed: int,
                         offset: int, pieces: list[tuple[int, int, int]], out: torch.Tensor, *,
                         num_threads: int | None = None) -> torch.Tensor:
    """`encode_packed` of several pieces of flat x in one call, each its own message (buckets restart):
    piece (start, end, pos) is x[start:end] with stream offset `offset + start`, written at byte `pos` of
    `out`. What a model's layers need: one call instead of one per layer (~50 us of checks each).
    Only where `fused_codec_supported` for every piece."""
    flat, lv = _prepare(x, levels, bucket_size, norm, seed, offset)
    if not fused_codec_supported(longest_piece(pieces), flat.device, bucket_size):
        raise ValueError(f"encode_pieces_packed needs a CPU tensor and bucket_size % 8 == 0 (got {bucket_size} "
                         f"on {flat.device}); use encode_packed, or quantize_indices and nuq.packing")
    table = torch.tensor(pieces, dtype=torch.int64).reshape(-1, 3)
    try:
        _ops().encode_pieces.default(out, flat, lv, table, bucket_size=bucket_size, linf=norm == "linf", seed=seed,
                                     offset=offset, num_threads=_threads(num_threads))
        return out
    except RuntimeError as err:
        raise ValueError(str(err).splitlines()[0]) from None


def decode_pieces_packed(message: torch.Tensor, levels: torch.Tensor, bucket_size: int,
                         pieces: list[tuple[int, int, int]], add_to: torch.Tensor, *,
                         num_threads: int | None = None) -> torch.Tensor:
    """add_to[start:end] += the values of the message at byte `pos` of `message`, for each piece
    (start, end, pos) written by `encode_pieces_packed` (the bits of `decode_packed(..., add_to=)`); returns
    add_to. Only where `fused_decode_supported` for every piece."""
    lv = checks.check_levels(levels, torch.device("cpu"))
    checks.check_bucket_size(bucket_size)
    if not fused_decode_supported(longest_piece(pieces), message.device, lv, bucket_size):
        raise ValueError(f"decode_pieces_packed needs a CPU message, bucket_size % 8 == 0 (got {bucket_size} "
                         f"on {message.device}) and the AVX-512 or AVX2 kernel for these {lv.numel()} levels")
    table = torch.tensor(pieces, dtype=torch.int64).reshape(-1, 3)
    try:
        _ops().decode_pieces_add.default(add_to, message, lv, table, bucket_size=bucket_size,
                                         num_threads=_threads(num_threads))
        return add_to
    except RuntimeError as err:
        raise ValueError(str(err).splitlines()[0]) from None


def fused_decode_supported(n: int, device: torch.device, levels: torch.Tensor, bucket_size: int,
                           backend: str | None = None) -> bool:
    """Whether `decode_packed` runs: `fused_codec_supported` and the AVX-512 or AVX2 kernel for these levels
    (elsewhere unpacking then `dequantize_indices` is as fast as a generic one-pass decode)."""
    if not fused_codec_supported(n, device, bucket_size, backend) or levels.device.type != "cpu":
        return False
    return bool(_extension("cpu").decode_supported(levels.detach().to(torch.float32).contiguous()))


def decode_packed(message: torch.Tensor, n: int, levels: torch.Tensor, bucket_size: int, *,
                  num_threads: int | None = None, add_to: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [n] values of a message written by `encode_packed` (levels[index] * bucket norm, the bits of
    `dequantize_indices`), unpacked and looked up in one pass. Only where `fused_decode_supported`.
    `add_to` (contiguous float32 [n]): the values are added to it instead (the bits of `add_to += values`,
    with no decoded vector in between) and it is returned; a corrupt message raises after adding."""
    lv = checks.check_levels(levels, torch.device("cpu"))
    checks.check_bucket_size(bucket_size)
    if not fused_decode_supported(n, message.device, lv, bucket_size):
        raise ValueError(f"decode_packed needs a CPU message, bucket_size % 8 == 0 (got {bucket_size} for {n} "
                         f"values on {message.device}) and the AVX-512 or AVX2 kernel for these {lv.numel()} levels; "
                         f"use nuq.packing.unpack and dequantize_indices")
    if add_to is not None and add_to.numel() != n:
        raise ValueError(f"add_to must hold the message's {n} values, got shape {tuple(add_to.shape)}")
    try:
        kw = dict(bucket_size=bucket_size, num_threads=_threads(num_threads))
        if add_to is not None:
            _ops().decode_add.default(add_to, message, lv, **kw)
            return add_to
        return _ops().decode.default(message, lv, n=n, **kw)
    except RuntimeError as err:
        raise ValueError(str(err).splitlines()[0]) from None


def dequantize_indices(indices: torch.Tensor, norms: torch.Tensor, levels: torch.Tensor, bucket_size: int, *,
                       backend: str | None = None, num_threads: int | None = None) -> torch.Tensor:
    """float32 [n] values levels[index] * norm of the index's bucket (the inverse of `quantize_indices`)."""
    if not isinstance(levels, torch.Tensor):
        raise TypeError(f"levels must be a torch.Tensor, got {type(levels).__name__}")
    lv = checks.check_levels(levels, levels.device)
    checks.check_bucket_size(bucket_size)
    checks.check_indices(indices, norms, lv, bucket_size)
    if indices.numel() == 0:
        return torch.empty(0, dtype=torch.float32, device=lv.device)
    return _backend(backend, lv.device).dequantize_indices(indices.contiguous(), norms.contiguous(), lv,
                                                           bucket_size, num_threads)

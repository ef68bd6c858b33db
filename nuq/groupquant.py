"""The group codec of activation compression (ActNN): per-sample bit widths, a per-(sample, group) or whole-tensor
range, unbiased stochastic rounding on nuq's Philox stream, codes bit-packed at each sample's own width.

Why here: the `actnn` plugin (trainer/plugins/actnn_quant.py) compresses every saved activation of every
step; one fused pass (range, noise, round, pack) is what makes that affordable. The compiled ops
torch.ops.nuq.group_compress / group_decompress (csrc/quant/group*.cpp: AVX-512, AVX2 or generic CPU path,
picked like the quantize kernel's, NUQ_CPU_KERNEL / nuq.kernel.forced_cpu_kernel; csrc/quant/group_cuda.cu on
GPUs) compute exactly the bits of `reference_compress`, this module's pure-PyTorch oracle:

* x (N, F) float32; each sample zero-padded to `groups` = ceil(F / G) groups of G values;
* range per (sample, group) (`pergroup`; the padding takes part) or the whole padded tensor's min/max;
  min -= 1e-6, scale = (2^b_n - 1) / (max + 1e-6 - min), all float32;
* value i of padded sample n uses Philox position offset + n * groups * G + i under key `seed`
  (nuq/philox.py) and its uniform r in [0, 1): code = round_half_even(clamp((x - min) * scale + (r - 1/2),
  0, 2^b_n - 1)), each float op rounded once (never fused); so E[code / scale + min] = x;
* codes: one uint8 stream, sample n's groups * G codes packed at b_n bits (nuq.packing's layout) from byte
  sum_{m < n} ceil(groups * G * b_m / 8); min and scale stored as (N, groups, 1) in `store` (float32 or bfloat16);
* decompress: code / scale + min in float32, the padding dropped.
"""
from __future__ import annotations

import torch

from nuq import ops, philox
from nuq.limits import MAX_GROUP_SIZE
from nuq.packing import MAX_BITS, MIN_BITS, pack, unpack

EPS = 1e-6  # widens each range, so a constant group still has a finite scale
STORES = (torch.float32, torch.bfloat16)


def grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """x (N, ...) as float32 (N, groups, G), zero-padded at the end of each sample."""
    n, features = x.shape[0], x[0].numel()
    groups = -(-features // group_size)
    flat = x.reshape(n, features).float()
    if groups * group_size != features:
        flat = torch.nn.functional.pad(flat, (0, groups * group_size - features))
    return flat.view(n, groups, group_size)


def ranges(v: torch.Tensor, pergroup: bool, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) per (sample, group) of grouped v, or of the whole tensor broadcast to every group; per group
    with the op group_ranges on the CPU (one pass; the same values), torch ops elsewhere or for `reference`."""
    if pergroup:
        if not reference and v.dtype == torch.float32 and v.device.type == "cpu" and _compiled(v.device):
            lo, hi = torch.ops.nuq.group_ranges.default(v.reshape(v.shape[0], -1), group_size=v.shape[2])
            return lo, hi
        return torch.aminmax(v, dim=-1, keepdim=True)  # one pass for both
    lo, hi = torch.aminmax(v)
    shape = (v.shape[0], v.shape[1], 1)
    return lo.expand(shape), hi.expand(shape)


def check(x: torch.Tensor, bits: torch.Tensor, group_size: int, store: torch.dtype) -> None:
    """One-line ValueErrors for what the kernels would refuse."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (samples, features), got shape {tuple(x.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not 1 <= group_size <= MAX_GROUP_SIZE:
        raise ValueError(f"group_size must be an int in 1..{MAX_GROUP_SIZE}, got {group_size!r}")
    if store not in STORES:
        raise ValueError(f"store must be torch.float32 or torch.bfloat16, got {store}")
    if bits.dim() != 1 or bits.numel() != x.shape[0] or (bits.numel() and (
            int(bits.min()) < MIN_BITS or int(bits.max()) > MAX_BITS)):
        raise ValueError(f"need one bit width in {MIN_BITS}..{MAX_BITS} per sample ({x.shape[0]}), "
                         f"got {bits.tolist()}")


def _compiled(device: torch.device) -> bool:
    if ops._quant is None:
        return False
    return device.type == "cpu" or (device.type == "cuda" and ops._quant.has_cuda())


def cpu_kernel() -> str:
    """The CPU path the compiled codec runs now: 'avx512', 'avx2' or 'generic' (for benchmarks)."""
    if ops._quant is None:
        raise RuntimeError("nuq._quant is not built: `python setup.py build_ext --inplace`")
    return ops._quant.group_cpu_kernel()


def compress(x: torch.Tensor, bits: torch.Tensor, group_size: int, pergroup: bool, store: torch.dtype,
             seed: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 stream, min, scale (N, groups, 1) in `store`) of x (N, F) (module doc); the compiled op
    where built for x's device, else `reference_compress` (same bits)."""
    check(x, bits, group_size, store)
    x = x.detach().float().contiguous()
    bits = bits.to(x.device, torch.uint8).contiguous()
    if _compiled(x.device):
        codes, mn, scale = torch.ops.nuq.group_compress.default(
            x, bits, group_size=group_size, pergroup=pergroup, store=store, seed=seed, offset=offset)
        return codes, mn, scale
    return reference_compress(x, bits, group_size, pergroup, store, seed, offset)


def decompress(codes: torch.Tensor, bits: torch.Tensor, mn: torch.Tensor, scale: torch.Tensor, group_size: int,
               features: int) -> torch.Tensor:
    """float32 (N, features): code / scale + min of each value (module doc)."""
    bits = bits.to(codes.device, torch.uint8).contiguous()
    if _compiled(codes.device):
        return torch.ops.nuq.group_decompress.default(codes, bits, mn, scale, group_size=group_size,
                                                      features=features)
    return reference_decompress(codes, bits, mn, scale, group_size, features)


def reference_codes(x: torch.Tensor, bits: torch.Tensor, group_size: int, pergroup: bool, seed: int,
                    offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 (N, groups, G), min, scale float32 (N, groups, 1)), unpacked: the oracle's arithmetic."""
    v = grouped(x.detach(), group_size)
    mn, mx = ranges(v, pergroup, reference=True)
    mn = mn - EPS
    levels = (2.0 ** bits.to(v.device, torch.float32) - 1).view(-1, 1, 1)
    scale = levels / (mx + EPS - mn)
    noise = philox.uniforms(seed, offset, v.numel(), v.device).view_as(v) - 0.5
    codes = v.sub(mn).mul_(scale).add_(noise).clamp_(min=0).clamp_(max=levels).round_().to(torch.uint8)
    return codes, mn, scale


def reference_compress(x: torch.Tensor, bits: torch.Tensor, group_size: int, pergroup: bool, store: torch.dtype,
                       seed: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`compress` in torch ops (any device): reference_codes, each sample packed at its width, concatenated."""
    codes, mn, scale = reference_codes(x, bits, group_size, pergroup, seed, offset)
    flat = codes.view(codes.shape[0], -1)
    stream = [pack(flat[i], int(b)) for i, b in enumerate(bits.tolist())]
    empty = torch.empty(0, dtype=torch.uint8, device=codes.device)
    return torch.cat(stream) if stream else empty, mn.to(store), scale.to(store)


def reference_decompress(codes: torch.Tensor, bits: torch.Tensor, mn: torch.Tensor, scale: torch.Tensor,
                         group_size: int, features: int) -> torch.Tensor:
    """`decompress` in torch ops (any device)."""
    n = bits.numel()
    groups = -(-features // group_size)
    padded = groups * group_size
    values = torch.empty(n, padded, dtype=torch.uint8, device=codes.device)
    start = 0
    for i, b in enumerate(bits.tolist()):
        size = (padded * b + 7) // 8
        values[i] = unpack(codes[start:start + size], b, padded)
        start += size
    v = values.view(n, groups, group_size).float().div_(scale.float().view(n, groups, 1))
    return v.add_(mn.float().view(n, groups, 1)).view(n, padded)[:, :features]

"""The math of inter-layer kernel sharing (ILKP), vectorised: no Python loop over kernels.

Every 3x3 kernel c (a 9-vector) of a shared layer is stored as alpha * R_k + beta, R_k one kernel of the
reference layer (pointwise convs: sub-vectors of their rows against windows of the reference rows, the same
math on vectors of another length). For each pair (c, r) the least-squares fit is
alpha = <c - c_bar, r - r_bar> / |r - r_bar|^2, beta = c_bar - alpha r_bar (no beta: alpha = <c, r> /
<r, r>). k is the reference with the smallest L1
residual |alpha r + beta - c|_1 or the largest |Pearson correlation|. All pairs come from one matrix
product per chunk of kernels; the L1 residuals need the (chunk, refs, 9) differences, so kernels are taken
in chunks that keep that tensor small.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

CHUNK_ELEMENTS = 1 << 22  # chunk x refs x 9 floats of L1 residuals at a time (16 MiB)


class Fit(NamedTuple):
    idx: torch.Tensor    # int64 [n]: the chosen reference of each kernel
    alpha: torch.Tensor  # [n]
    beta: torch.Tensor   # [n] (zeros without beta)


def _safe_div(num: torch.Tensor, den: torch.Tensor, mode: str, eps: float) -> torch.Tensor:
    """num / den with the study's handling of zero denominators (constant reference kernels); never NaN."""
    if mode == "add":
        return num / (den + eps)
    if mode == "replace":
        return num / torch.where(den == 0, torch.full_like(den, eps), den)
    if mode == "clamp":
        return num / den.clamp_min(eps)
    if mode == "alpha1":
        return torch.where(den == 0, torch.ones_like(num), num / torch.where(den == 0, torch.ones_like(den), den))
    raise ValueError(f"ilkp_eps_mode {mode!r}: expected add, replace, clamp or alpha1")


def pair_fits(cur: torch.Tensor, ref: torch.Tensor, beta: bool = True, eps_mode: str = "add",
              eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (alpha, beta) of every kernel of cur [n, d] on every reference of ref [m, d]: two [n, m]."""
    if not beta:
        alpha = _safe_div(cur @ ref.T, (ref * ref).sum(1), eps_mode, eps)
        return alpha, torch.zeros_like(alpha)
    c_bar, r_bar = cur.mean(1, keepdim=True), ref.mean(1, keepdim=True)
    rc = ref - r_bar
    alpha = _safe_div((cur - c_bar) @ rc.T, (rc * rc).sum(1), eps_mode, eps)
    return alpha, c_bar - alpha * r_bar.T


def abs_pcc(cur: torch.Tensor, ref: torch.Tensor, eps_mode: str = "add", eps: float = 1e-8) -> torch.Tensor:
    """|Pearson correlation| of every kernel with every reference, [n, m] (0 for a constant kernel)."""
    cc, rc = cur - cur.mean(1, keepdim=True), ref - ref.mean(1, keepdim=True)
    norms = cc.norm(dim=1, keepdim=True) * rc.norm(dim=1)
    return _safe_div((cc @ rc.T).abs(), norms, eps_mode, eps).nan_to_num(0.0)


def l1_residuals(cur: torch.Tensor, ref: torch.Tensor, alpha: torch.Tensor,
                 beta: torch.Tensor | float) -> torch.Tensor:
    """|alpha_ij r_j + beta_ij - c_i|_1 for every pair, [n, m]."""
    out = alpha[:, :, None] * ref[None] - cur[:, None]
    if isinstance(beta, torch.Tensor):
        out += beta[:, :, None]
    return out.abs_().sum(2)


def fit(cur: torch.Tensor, ref: torch.Tensor, match: str = "l1", beta: bool = True, eps_mode: str = "add",
        eps: float = 1e-8, idx: torch.Tensor | None = None) -> Fit:
    """Each kernel's reference and affine fit; with `idx` given the references are kept (only alpha, beta refit)."""
    if match not in ("l1", "abs_pcc"):
        raise ValueError(f"ilkp_match {match!r}: expected l1 or abs_pcc")
    cur, ref = cur.detach(), ref.detach()
    if idx is not None:
        chosen = ref[idx]
        a, b = pair_fits_rows(cur, chosen, beta, eps_mode, eps)
        return Fit(idx.clone(), a, b)
    ref_centred = ref - ref.mean(1, keepdim=True)
    step = max(1, CHUNK_ELEMENTS // max(1, ref.shape[0] * ref.shape[1]))
    parts = []
    for start in range(0, cur.shape[0], step):
        c = cur[start:start + step]
        alpha, b = pair_fits(c, ref, beta, eps_mode, eps)
        if match == "l1" and beta:  # alpha r + beta - c = alpha (r - r_bar) - (c - c_bar): no beta term
            k = l1_residuals(c - c.mean(1, keepdim=True), ref_centred, alpha, 0.0).argmin(1)
        elif match == "l1":
            k = l1_residuals(c, ref, alpha, b).argmin(1)
        else:
            k = abs_pcc(c, ref, eps_mode, eps).argmax(1)
        rows = torch.arange(c.shape[0])
        parts.append((k, alpha[rows, k], b[rows, k]))
    return Fit(*(torch.cat(p) for p in zip(*parts))) if parts else Fit(
        torch.zeros(0, dtype=torch.long), cur.new_zeros(0), cur.new_zeros(0))


def pair_fits_rows(cur: torch.Tensor, chosen: torch.Tensor, beta: bool, eps_mode: str,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (alpha, beta) of kernel i on reference row i (a fixed index), two [n]."""
    if not beta:
        alpha = _safe_div((cur * chosen).sum(1), (chosen * chosen).sum(1), eps_mode, eps)
        return alpha, torch.zeros_like(alpha)
    c_bar, r_bar = cur.mean(1), chosen.mean(1)
    rc = chosen - r_bar[:, None]
    alpha = _safe_div(((cur - c_bar[:, None]) * rc).sum(1), (rc * rc).sum(1), eps_mode, eps)
    return alpha, c_bar - alpha * r_bar


def windows(rows: torch.Tensor, length: int, stride: int = 1) -> torch.Tensor:
    """Every window of `length` consecutive entries of every row of rows [r, c], `stride` apart, plus the
    tail window ending at the last entry when the stride skips it: [r * #windows, length], row by row (the
    study's reference set for pointwise convs)."""
    if not 1 <= length <= rows.shape[1]:
        raise ValueError(f"window length {length}: expected 1..{rows.shape[1]} (the reference rows' length)")
    if stride < 1:
        raise ValueError(f"window stride {stride}: expected >= 1")
    out = rows.unfold(1, length, stride)  # [r, n, length]
    if (rows.shape[1] - length) % stride:
        out = torch.cat([out, rows[:, None, -length:]], 1)
    return out.reshape(-1, length)


def reconstruct(ref: torch.Tensor, f: Fit) -> torch.Tensor:
    """alpha R_k + beta, [n, d]."""
    return f.alpha[:, None] * ref[f.idx] + f.beta[:, None]


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The study's quantizer: a symmetric grid of 2^bits levels, step (max - min) / (2^bits - 1), no zero
    point, levels -2^(b-1)..2^(b-1)-1 (so the larger end of an asymmetric range is clipped)."""
    if bits < 1:
        raise ValueError(f"quantizer bits must be >= 1, got {bits}")
    if x.numel() == 0:
        return x.clone()
    q_min, q_max = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    scale = (x.max() - x.min()) / (q_max - q_min)
    if scale == 0:
        return x.clone()
    return scale * torch.round(torch.clamp(x / scale, q_min, q_max))


def index_bits(n_refs: int) -> int:
    """Bits of a reference index: ceil(log2 #references) (at least 1)."""
    return max(1, math.ceil(math.log2(n_refs))) if n_refs > 1 else 1

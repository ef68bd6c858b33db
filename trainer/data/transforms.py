"""Batch transforms on tensors (on the GPU when the batch is there): normalisation, pad-crop, flip.

Random choices are drawn on the CPU from the stream's generator, so they are identical on any device
and resume exactly from the generator's saved state.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def normalizer(mean: Sequence[float], std: Sequence[float], scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> (x / scale - mean) / std per channel (dim 1)."""
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        m = mean_t.to(x.device).view(shape)
        s = std_t.to(x.device).view(shape)
        return (x.float() / scale - m) / s
    return prepare


def crop_flip(pad: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Zero-pad by `pad`, take a random crop of the original size, flip horizontally with p=1/2."""
    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).to(x.device)
        flips = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = offsets[0][:, None] + torch.arange(h, device=x.device)        # (n, h)
        cols = offsets[1][:, None] + torch.arange(w, device=x.device)        # (n, w)
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        batch = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
        return out.permute(0, 3, 1, 2).contiguous()
    return augment

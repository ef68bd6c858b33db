"""`l1clip`: an L1 penalty on the weights of the conv and linear layers, with optional weight clamping.

The shipped example plugin (docs/plugins.md). L1 drives weights to zero (sparsity); clamping to
[-clip, clip] after each step is BinaryConnect's trick for keeping real-valued weights in the range that a
later binarisation or quantization sees. `l1clip_skip_ends` keeps the stem and the classifier out, as
quantization papers usually do. It logs `l1clip/weight_l1` (the penalised norm) and, with clamping,
`l1clip/clipped_frac` (the fraction of chosen weights at the bound). It keeps no state beyond the model.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.plugins.base import Plugin, register_plugin


@register_plugin("l1clip")
class L1Clip(Plugin):
    """L1 regulariser + weight clamping on the weights of nn.Linear and nn.Conv* layers."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)
        self.l1, self.clip = opt["l1clip_l1"], opt["l1clip_clip"]
        if self.l1 < 0 or self.clip < 0:
            raise ValueError(f"l1clip_l1 ({self.l1}) and l1clip_clip ({self.clip}) must be >= 0")
        self.layers: list[nn.Module] = []

    def configure_model(self, model: nn.Module) -> nn.Module:
        """Choose the layers (the model itself is unchanged). It keeps the layers, not their weight tensors:
        another plugin may replace a weight at an epoch boundary."""
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
        if self.opt["l1clip_skip_ends"]:
            layers = layers[1:-1]
        if not layers:
            raise ValueError(f"l1clip: the model has no conv or linear layer to regularise "
                             f"(l1clip_skip_ends={self.opt['l1clip_skip_ends']})")
        self.layers = layers
        return model

    @property
    def weights(self) -> list[nn.Parameter]:
        return [m.weight for m in self.layers]

    def _norm(self) -> torch.Tensor:
        return sum(w.abs().sum() for w in self.weights)

    def extra_loss(self, model: nn.Module, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        return self.l1 * self._norm() if self.l1 > 0 else None

    def after_step(self, step: int) -> None:
        if self.clip > 0:
            with torch.no_grad():
                for w in self.weights:
                    w.clamp_(-self.clip, self.clip)

    def scalars(self) -> dict[str, float]:
        with torch.no_grad():
            out = {"weight_l1": float(self._norm())}
            if self.clip > 0:
                at_bound = sum(int((w.abs() >= self.clip).sum()) for w in self.weights)
                out["clipped_frac"] = at_bound / sum(w.numel() for w in self.weights)
        return out

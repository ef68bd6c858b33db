"""Test-only plugins. Importing this module declares and registers them (import it under this one name).

`sqnorm` adds c ||w||^2 (all parameters) to the loss: every g_estim must differentiate task loss + that.

`widen` changes parameter shapes mid-run and keeps per-sample state. At each epoch boundary it widens
the hidden layer of `digits_mlp` by `widen_units` units (new rows of the first layer drawn from torch's
seeded global generator, new columns of the classifier zero, so the function is unchanged, as in
Net2Net) and returns True; the trainer must rebuild the optimizer and the estimator.
It asks for the batches' sample indices and counts how often each training sample was drawn (its state),
and adds nothing to the loss.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.options import declare_plugin
from trainer.plugins.base import Plugin, register_plugin

declare_plugin("widen", {"widen_units": ("int", 4, "Hidden units added at each epoch boundary.")})
declare_plugin("sqnorm", {"sqnorm_c": ("float", 0.01, "Coefficient c of c ||w||^2.")})


@register_plugin("sqnorm")
class SqNorm(Plugin):
    def extra_loss(self, model, output, target):
        return self.opt["sqnorm_c"] * sum(p.square().sum() for p in model.parameters())


@register_plugin("widen")
class Widen(Plugin):
    needs_sample_index = True

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)
        self.units = opt["widen_units"]
        self.seen = torch.zeros(0, dtype=torch.int64)

    def configure_model(self, model: nn.Module) -> nn.Module:
        self.first, self.last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        return model

    @property
    def width(self) -> int:
        return self.first.out_features

    def _resize(self, width: int, new_rows: torch.Tensor) -> None:
        """Hidden width -> `width`: first layer gets `new_rows` (and zero biases), classifier zero columns."""
        first, last = self.first, self.last
        with torch.no_grad():
            first.weight = nn.Parameter(torch.cat([first.weight, new_rows]))
            first.bias = nn.Parameter(torch.cat([first.bias, first.bias.new_zeros(len(new_rows))]))
            zero_columns = last.weight.new_zeros(last.out_features, len(new_rows))
            last.weight = nn.Parameter(torch.cat([last.weight, zero_columns], 1))
        first.out_features = last.in_features = width

    def on_epoch_end(self, epoch: int) -> bool:
        rows = torch.randn(self.units, self.first.in_features) * 0.1  # the global generator: restored on resume
        self._resize(self.width + self.units, rows.to(self.first.weight.device))
        return True

    def extra_loss(self, model, output, target, index=None):
        if self.seen.numel() == 0:
            self.seen = torch.zeros(1797, dtype=torch.int64)  # >= the digits training split
        self.seen.index_add_(0, index.cpu(), torch.ones_like(index.cpu()))
        return None

    def scalars(self) -> dict[str, float]:
        return {"width": float(self.width)}

    def state_dict(self) -> dict[str, Any]:
        return {"width": self.width, "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        grow = state["width"] - self.width
        if grow:  # the checkpoint's shapes; the values come from the model's state, loaded next
            self._resize(state["width"], self.first.weight.new_zeros(grow, self.first.in_features))
        if "seen" in state:  # a stage started from this run gets carry_state() alone: the width
            self.seen = state["seen"].clone()

    def carry_state(self) -> dict[str, Any] | None:
        return {"width": self.width}

"""`actnn`: activation-compressed training (ActNN, Chen et al. 2021) with the study's defaults.

The tensors autograd saves for backward are kept as bit-packed stochastic-rounded codes (what autograd
holds is the packed bytes), so the weight gradients stay unbiased; the forward pass is full precision.
Modes: `qlinear` compresses the inputs of conv/linear layers, `quantize` also batch norm's normalised
input; `actnn_relu_mask` makes ReLU modules keep a 1-bit mask. Bits per sample come from the greedy
allocation (trainer/plugins/actnn_quant.py), weighted by per-sample gradient scales indexed by the
samples' dataset indices (`begin_batch`; `actnn_use_gradient: false`: one scale per layer);
`actnn_perlayer` re-divides the budget across layers after each step. `actnn_var_at` runs the study's
variance protocol (trainer/plugins/actnn_var.py) on the last training batches and logs `actnn/var`,
`actnn/bias`, `actnn/sample_var`. Also logs `actnn/bits`, the average bits of the last allocation.
docs/actnn.md.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import nn

from trainer.options import parse_int_list
from trainer.plugins.actnn_layers import Compressor, convert
from trainer.plugins.actnn_quant import STORE_DTYPES, greedy_bits
from trainer.plugins.actnn_var import measure
from trainer.plugins.base import Plugin, register_plugin

KINDS = {"off": (), "qlinear": (nn.Conv2d, nn.Linear), "quantize": (nn.Conv2d, nn.Linear, nn.BatchNorm2d)}


@register_plugin("actnn")
class ActNN(Plugin):
    """Swaps conv/linear (and BN, ReLU) for layers that save compressed activations."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)
        self.mode, self.cabits, self.ibits = opt["actnn_mode"], opt["actnn_cabits"], opt["actnn_ibits"]
        if self.cabits > self.ibits:  # each key's own range (1..8) is the schema's, checked at expansion
            raise ValueError(f"actnn needs actnn_cabits ({self.cabits}) <= actnn_ibits ({self.ibits})")
        # the study's per-sample gradient scales need each batch's dataset indices before its forward pass
        self.needs_sample_index = self.mode != "off" and bool(opt["actnn_use_gradient"])
        self.perlayer = self.mode != "off" and bool(opt["actnn_perlayer"])
        self.var_at = set(parse_int_list(opt["actnn_var_at"])) if opt["actnn_var_at"] else set()
        self.batches: deque = deque(maxlen=opt["actnn_var_batches"])
        self.layers: list[nn.Module] = []
        self.weight_layers: list[nn.Module] = []  # the conv/linear layers whose weight gradients the protocol measures
        self.result: dict[str, float] = {}
        self._input: torch.Tensor | None = None
        self._index: torch.Tensor | None = None
        self.model: nn.Module | None = None

    def configure_model(self, model: nn.Module) -> nn.Module:
        self.model = model
        self.weight_layers = [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
        self.layers = convert(model, KINDS[self.mode])
        for m in self.layers:
            area = m.kernel_size[0] * m.kernel_size[1] // m.groups if isinstance(m, nn.Conv2d) else 1
            m.compressor = Compressor(self.opt["actnn_group_size"], self.opt["actnn_pergroup"],
                                      STORE_DTYPES[self.opt["actnn_store"]], self.ibits, self.cabits, area,
                                      greedy_bits)
        self._follow_previous_conv()
        if self.opt["actnn_relu_mask"] and self.mode != "off":
            self.layers += convert(model, (nn.ReLU,))
        if self.var_at:
            model.register_forward_pre_hook(self._capture)
        return model

    def _follow_previous_conv(self) -> None:
        """Under actnn_perlayer a batch norm takes the bits of the conv before it (as the study's QBNScheme):
        the conv cost underrates BN, whose noise reaches every layer below."""
        previous = None
        for m in self.layers:
            m.compressor.follow = previous if isinstance(m, nn.BatchNorm2d) else None
            if isinstance(m, nn.Conv2d):
                previous = m.compressor

    @property
    def compressors(self) -> list[Compressor]:
        return [m.compressor for m in self.layers if getattr(m, "compressor", None) is not None]

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if module.training and torch.is_grad_enabled():
            self._input = args[0].detach()

    def begin_batch(self, index: torch.Tensor | None) -> None:
        """The dataset indices of the batch about to go forward (None: not known, one scale per layer)."""
        self._index = None if index is None else index.detach().cpu()
        for c in self.compressors:
            c.index = self._index

    def extra_loss(self, model: nn.Module, output: torch.Tensor, target: torch.Tensor,
                   index: torch.Tensor | None = None) -> None:
        if self.var_at and self._input is not None:
            self.batches.append((self._input, target.detach(), self._index))
            self._input = None
        return None

    def update_scales(self, on: bool) -> None:
        """Whether backward passes update the gradient scales (the variance protocol freezes them)."""
        for c in self.compressors:
            c.update_scale = on

    def set_compression(self, on: bool) -> None:
        for m in self.layers:
            if getattr(m, "compressor", None) is not None:
                m.compressor.enabled = on
            else:
                m.enabled = on

    def after_step(self, step: int) -> None:
        self.allocate_perlayer()
        if step + 1 in self.var_at:
            self._input = None
            self.result = measure(self.model, list(self.batches), [m.weight for m in self.weight_layers], self,
                                  self.opt["actnn_var_draws"])

    def allocate_perlayer(self) -> None:
        """Under actnn_perlayer (else nothing): pool every layer's per-sample predicted variances, weighted
        by its features per sample, and give each layer the mean bits of its share of the greedy allocation
        of the total budget."""
        if not self.perlayer:
            return
        comps = [c for c in self.compressors if c.last_cost is not None and c.grad_scale > 0 and c.follow is None]
        if len(comps) < 2:
            return
        costs = torch.cat([c.last_cost for c in comps])
        weights = torch.cat([torch.full(c.last_cost.shape, float(c.features), dtype=torch.float64) for c in comps])
        bits = greedy_bits(costs, self.ibits, self.cabits * float(weights.sum()), weights)
        for c, share in zip(comps, torch.split(bits, [len(c.last_cost) for c in comps])):
            c.avg_bits = float(share.double().mean())
            c.ibits = max(self.ibits, min(8, int(-(-c.avg_bits // 1))))
        for c in self.compressors:
            if c.follow is not None:
                c.avg_bits, c.ibits = c.follow.avg_bits, c.follow.ibits

    def scalars(self) -> dict[str, float]:
        out = dict(self.result)
        avg = [c.last_bits for c in self.compressors if c.last_bits is not None]
        if avg:
            out["bits"] = sum(avg) / len(avg)
        return out

    def layer_state(self) -> list[dict[str, Any]]:
        """Each compressor's learned state: scales and allocation (copies)."""
        return [{"grad_scale": c.grad_scale, "scales": c.scales.clone(), "avg_bits": c.avg_bits, "ibits": c.ibits,
                 "last_cost": c.last_cost} for c in self.compressors]

    def load_layer_state(self, layers: list[dict[str, Any]]) -> None:
        for c, s in zip(self.compressors, layers):
            c.grad_scale, c.avg_bits, c.ibits, c.last_cost = s["grad_scale"], s["avg_bits"], s["ibits"], s["last_cost"]
            c.scales = s.get("scales", torch.zeros(0)).clone()  # checkpoints before per-sample scales had none

    def state_dict(self) -> dict[str, Any]:
        return {"layers": self.layer_state(), "batches": [list(b) for b in self.batches], "result": dict(self.result)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_layer_state(state["layers"])
        self.batches.extend((*b, None)[:3] for b in state["batches"])  # older checkpoints: no indices
        self.result = dict(state["result"])


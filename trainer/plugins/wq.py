"""`wq`: weight and activation quantization (XNOR-Net, TWN, DoReFa-Net) as the CIFAR-10 study did it
(docs/wq.md; the math is in trainer/plugins/wq_ops.py).

`configure_model` swaps every Conv2d but the first (the stem) for a quantized conv sharing its parameters,
the 1x1 shortcut convs included; the first conv and the last layer (the classifier) stay full precision
unless `wq_first_last`. Scalars: `bits_w/<layer>` and `bits_a/<layer>` of every conv and linear layer,
`size_bits` (each parameter at 32 bits except the quantized weights at their code bits plus fp32 scales:
the latent weights are not counted), `compression` (32-bit size over size_bits), `macs` and
`macs_quantized` per sample, counted from the layers' real output shapes. It keeps no state.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from trainer.models.macs import COUNTED, MacCounter
from trainer.plugins.base import Plugin, register_plugin
from trainer.plugins.wq_ops import FULL_BITS, make_quantizer, quantized


def _set_module(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)


@register_plugin("wq")
class WeightQuant(Plugin):
    """Quantized convs (and, with wq_first_last, stem and classifier) with full-precision latent weights."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)
        method = opt["wq_method"]
        self.quantizer = None if method == "none" else make_quantizer(
            method, twn_alpha=opt["wq_twn_alpha"], w_bits=opt["wq_w_bits"], a_bits=opt["wq_a_bits"],
            dorefa=opt["wq_dorefa_variant"])
        self.layers: dict[str, nn.Module] = {}
        self.quantized: set[str] = set()
        self.model: nn.Module | None = None
        self.macs: MacCounter | None = None

    def chosen(self, model: nn.Module) -> list[str]:
        """Names of the layers to quantize: every conv but the first; with wq_first_last every conv and the
        last conv or linear layer (the classifier)."""
        convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not self.opt["wq_first_last"]:
            return convs[1:]
        last = list(self.layers)[-1:]
        return convs + [name for name in last if name not in convs]

    def configure_model(self, model: nn.Module) -> nn.Module:
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, COUNTED)}
        if self.quantizer is not None:
            names = self.chosen(model)
            if not names:
                raise ValueError(f"wq: the model has no conv besides the stem to quantize "
                                 f"(wq_first_last={self.opt['wq_first_last']}); use a conv model such as "
                                 "resnet20_mcts or digits_cnn, or set wq_first_last")
            for name in names:
                self.layers[name] = quantized(self.layers[name], self.quantizer)
                _set_module(model, name, self.layers[name])
            self.quantized = set(names)
        self.model = model
        self.macs = MacCounter(model)
        return model

    def _bits(self, name: str) -> tuple[int, int]:
        q = self.quantizer
        return (q.bits_w, q.bits_a) if name in self.quantized and q is not None else (FULL_BITS, FULL_BITS)

    def size_bits(self) -> int:
        """Each parameter at 32 bits, except the quantized layers' weights at their stored bits."""
        assert self.model is not None, "configure_model first"
        quantized_weights = {id(self.layers[name].weight): self.layers[name] for name in self.quantized}
        return sum(quantized_weights[id(p)].weight_bits() if id(p) in quantized_weights else FULL_BITS * p.numel()
                   for p in self.model.parameters())

    def scalars(self) -> dict[str, float]:
        if self.model is None:
            return {}
        out: dict[str, float] = {}
        for name in self.layers:
            out[f"bits_w/{name}"], out[f"bits_a/{name}"] = map(float, self._bits(name))
        size = self.size_bits()
        out["size_bits"] = float(size)
        out["compression"] = FULL_BITS * sum(p.numel() for p in self.model.parameters()) / size
        if self.macs is not None and self.macs.ready:
            out["macs"] = float(self.macs.total())
            out["macs_quantized"] = float(self.macs.total(self.quantized))
        return out

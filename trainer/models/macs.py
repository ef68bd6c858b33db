"""Multiply-accumulates per sample of every Conv2d and Linear (subclasses included), from one real forward.

Forward hooks read each layer's output shape, so the count is right for any input size and for layers a
plugin replaced (a quantized conv still does its multiply-accumulates, simulated or not). BN, activations
and pooling are not counted.
"""
from __future__ import annotations

from torch import nn
from torch.utils.hooks import RemovableHandle

COUNTED = (nn.Conv2d, nn.Linear)


def layer_macs(layer: nn.Module, output_shape: tuple[int, ...]) -> int:
    """MACs for one sample: outputs per sample x inputs each output reads."""
    per_sample = 1
    for size in output_shape[1:]:
        per_sample *= size
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return per_sample * (layer.in_channels // layer.groups) * kh * kw
    return per_sample * layer.in_features


class MacCounter:
    """Records each counted layer's MACs on its next forward, then stops listening (`per_layer` by name)."""

    def __init__(self, model: nn.Module) -> None:
        self.per_layer: dict[str, int] = {}
        self._handles: dict[str, RemovableHandle] = {}
        for name, layer in model.named_modules():
            if isinstance(layer, COUNTED):
                self._handles[name] = layer.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def record(layer: nn.Module, inputs: tuple, output) -> None:
            self.per_layer[name] = layer_macs(layer, tuple(output.shape))
            handle = self._handles.pop(name, None)  # None: a copy of the model ran the copied hook
            if handle is not None:
                handle.remove()
        return record

    @property
    def ready(self) -> bool:
        """Every counted layer has run at least once."""
        return not self._handles

    def total(self, names: set[str] | None = None) -> int:
        """MACs per sample of all layers seen (or of those named)."""
        return sum(m for name, m in self.per_layer.items() if names is None or name in names)

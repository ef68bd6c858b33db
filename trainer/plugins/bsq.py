"""`bsq`: mixed-precision search by bit-level sparsity (Yang et al., ICLR 2021; docs/bsq.md).

Every conv and linear weight becomes signed bit planes (trainer/plugins/bsq_layers.py). In `train` mode a
bit-plane group Lasso (weighted by each layer's #weights x bits) drives whole planes to zero; the bits are
clamped to [0, 2] after each step, and every `bsq_interval` epochs the planes are re-quantized to exact bits
and the empty top and bottom planes pruned: the layer's precision drops, its parameters change shape and
the trainer rebuilds the optimizer. `convert` turns the starting weights (full precision, or another form)
into bit planes; `finetune` trains with the per-layer precisions fixed. The per-layer precisions (the
scheme) are the plugin's state and carry into the next stage of a chain.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import runfiles
from trainer.plugins.base import Plugin, register_plugin
from trainer.plugins.bsq_layers import BITS, VALUE, ActQuant, BitLayer, places, quantize_float, to_planes


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, leaf = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), leaf


def is_downsample(name: str) -> bool:
    """The 1x1 shortcut convs, which the study leaves out of the weight and bit counts."""
    return "downsample" in name


def counted(layers: dict[str, BitLayer]) -> list[BitLayer]:
    """The layers whose weights and bits the study counts: all but the downsample convs."""
    return [layer for name, layer in layers.items() if not is_downsample(name)] or list(layers.values())


def compression(layers: dict[str, BitLayer]) -> float:
    """32 x total weights / total weight bits (downsample convs excluded, as the study)."""
    return 32.0 * sum(lay.numel for lay in counted(layers)) / sum(lay.numel * lay.nbits for lay in counted(layers))


def bit_group_lasso(layers: dict[str, BitLayer]) -> torch.Tensor:
    """sum_l (#weights_l x bits_l) x sum_b ||plane_b||_2, divided by the total weight count (the study's reg/TP)."""
    total = sum(layer.numel for layer in counted(layers))
    return sum(layer.numel * layer.nbits * layer.group_lasso() for layer in layers.values()) / total


def read_scheme(source: str) -> dict[str, int]:
    """The per-layer bits a bsq run saved: `source` is its checkpoint file or its run folder."""
    path = Path(source).expanduser()
    path = path / runfiles.CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"bsq_bits_from {source!r}: no checkpoint file or run folder with {runfiles.CHECKPOINT}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    bits = (state.get("carry") or {}).get("bsq", {}).get("bits") if isinstance(state, dict) else None
    if not bits:
        raise ValueError(f"bsq_bits_from {source!r}: {path} holds no bsq bit scheme (not a bsq run's checkpoint)")
    return {name: int(n) for name, n in bits.items()}


@register_plugin("bsq")
class BSQ(Plugin):
    """Bit-plane representation, group Lasso, clamping, periodic re-quantization and pruning."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)
        self.mode = opt["bsq_mode"]
        self.alpha, self.threshold = opt["bsq_alpha"], opt["bsq_threshold"]
        if self.alpha < 0:
            raise ValueError(f"bsq_alpha {self.alpha} must be >= 0")
        if not 0 <= self.threshold < 100:
            raise ValueError(f"bsq_threshold {self.threshold} must be a percentage in [0, 100)")
        if self.mode == "convert" and not opt["eval_only"]:
            raise ValueError("bsq_mode=convert only converts and evaluates: set eval_only (or use bsq_mode=train)")
        self.layers: dict[str, BitLayer] = {}

    # ---- building ------------------------------------------------------------------------------------

    def configure_model(self, model: nn.Module) -> nn.Module:
        """Bit layers for every Conv2d and Linear (not the downsample convs with bsq_fp_downsample), and
        activation quantization after every ReLU6 (the first one, the stem's, at bsq_act_bits_stem)."""
        form = VALUE if self.mode == "finetune" else BITS
        chosen = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                  and not (self.opt["bsq_fp_downsample"] and is_downsample(name))]
        if not chosen:
            raise ValueError(f"bsq: arch {self.opt['arch']!r} has no Conv2d or Linear layer to represent in bits")
        for name, module in chosen:
            layer = BitLayer(module, self.opt["bsq_nbits"], form)
            parent, leaf = _parent(model, name)
            setattr(parent, leaf, layer)
            self.layers[name] = layer
        if self.opt["bsq_bits_from"]:
            self.load_state_dict({"bits": read_scheme(self.opt["bsq_bits_from"])})
        acts = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU6)]
        for i, name in enumerate(acts):
            bits = self.opt["bsq_act_bits_stem"] if i == 0 else self.opt["bsq_act_bits"]
            if bits:
                parent, leaf = _parent(model, name)
                setattr(parent, leaf, ActQuant(getattr(parent, leaf), bits))
        return model

    def start_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream weights in this run's form: a full-precision `weight` becomes bit planes at the layer's
        precision (the study's convert.py), planes become a fine-tuned value and back."""
        out = dict(weights)
        for name, layer in self.layers.items():
            key = f"{name}."
            if key + "weight" in out:
                levels, scale = quantize_float(out.pop(key + "weight"), layer.nbits)
                denom = torch.tensor(float(2 ** layer.nbits - 1), dtype=scale.dtype)
            elif key + "pos" in out or key + "value" in out:
                scale, denom = out[key + "scale"], out[key + "denom"]
                if key + "pos" in out:
                    planes = out.pop(key + "pos") - out.pop(key + "neg")
                    levels = (planes * places(len(planes), planes)).sum(0)
                else:
                    levels = out.pop(key + "value") * denom
                levels = levels.clamp(-layer.limit, layer.limit).round()
            else:
                continue
            out[key + "scale"], out[key + "denom"] = scale, denom
            if layer.form == BITS:
                out[key + "pos"] = to_planes(levels.clamp(min=0), layer.nbits)
                out[key + "neg"] = to_planes((-levels).clamp(min=0), layer.nbits)
            else:
                out[key + "value"] = levels / denom
        return out

    # ---- training ------------------------------------------------------------------------------------

    def extra_loss(self, model: nn.Module, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        if self.mode != "train" or self.alpha == 0:
            return None
        return self.alpha * bit_group_lasso(self.layers)

    def after_step(self, step: int) -> None:
        for layer in self.layers.values():
            layer.clamp_()

    def on_epoch_end(self, epoch: int) -> bool:
        """Every bsq_interval epochs (train mode): re-quantize, prune; new parameters (momentum restarts)."""
        if self.mode != "train" or epoch % self.opt["bsq_interval"]:
            return False
        for layer in self.layers.values():
            layer.requantize_and_prune(self.threshold)
        return True

    # ---- metrics and state ---------------------------------------------------------------------------

    def scalars(self) -> dict[str, float]:
        out = {"compression": compression(self.layers), "total_bits": float(sum(
            lay.numel * lay.nbits for lay in self.layers.values()))}
        if self.mode == "train":
            with torch.no_grad():
                out["reg"] = float(bit_group_lasso(self.layers))
        for name, layer in self.layers.items():
            out[f"bits/{name}"] = float(layer.nbits)
            if layer.form == BITS:
                for b, share in enumerate(layer.plane_nonzero().tolist()):
                    out[f"nonzero/{name}/{b}"] = share
        return out

    def scheme(self) -> dict[str, int]:
        """Per-layer precision."""
        return {name: layer.nbits for name, layer in self.layers.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"bits": self.scheme()}

    def carry_state(self) -> dict[str, Any] | None:
        return {"bits": self.scheme()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give each layer the saved precision (zero values; the weights are loaded next)."""
        bits = state.get("bits", {})
        unknown = sorted(set(bits) - set(self.layers))
        if unknown:
            raise ValueError(f"bsq: saved bit scheme names layers {', '.join(unknown)} that this model's bit "
                             f"layers lack ({', '.join(self.layers)})")
        for name, nbits in bits.items():
            self.layers[name].resize(int(nbits))

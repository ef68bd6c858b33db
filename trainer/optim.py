"""Optimizers by the `optim` option: a registry (the names the schema offers are trainer/names.py OPTIMIZERS).

An unknown name is an error naming the registered ones, never a silent fallback to another optimizer.
`wd_norm: false` puts normalization layers' parameters in a second parameter group without weight decay
(ActNN's recipe, like NVIDIA's no-bn-weight-decay): decaying a BN scale only rescales what the next
layer sees, so the recipes leave them alone.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from nuq.registry import Registry
from trainer.names import OPTIMIZERS

Params = list[nn.Parameter] | list[dict[str, Any]]  # what torch optimizers take: parameters or parameter groups
Factory = Callable[[Params, dict[str, Any]], torch.optim.Optimizer]
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # batch and instance norm, group, layer
_OPTIMIZERS = Registry("optimizer", OPTIMIZERS, "trainer/names.py OPTIMIZERS")


def register_optimizer(name: str) -> Callable[[Factory], Factory]:
    """Register `factory(params, opt) -> Optimizer` as `optim: name` (a name is taken once)."""
    return _OPTIMIZERS.register(name)


def registered() -> list[str]:
    return sorted(_OPTIMIZERS)


@register_optimizer("sgd")
def _sgd(params: Params, opt: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"], nesterov=opt["nesterov"],
                           weight_decay=opt["weight_decay"])


@register_optimizer("adam")
def _adam(params: Params, opt: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=opt["lr"], weight_decay=opt["weight_decay"])


def parameter_groups(opt: dict[str, Any], model: nn.Module) -> Params:
    """The model's trainable parameters; with `wd_norm` false, two groups: the rest, and the normalization
    layers' parameters with weight_decay 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt["wd_norm"]:
        return params
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    groups = [{"params": [p for p in params if id(p) not in norm]},
              {"params": [p for p in params if id(p) in norm], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(opt: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer `opt['optim']` over the model's trainable parameters."""
    name = opt["optim"]
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optim {name!r}; registered: {', '.join(registered())}")
    return _OPTIMIZERS[name](parameter_groups(opt, model), opt)

"""Optimizers by the `optim` option: a registry (the names the schema offers are trainer/names.py OPTIMIZERS).

An unknown name is an error naming the registered ones, never a silent fallback to another optimizer.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from nuq.registry import Registry
from trainer.names import OPTIMIZERS

Factory = Callable[[list[nn.Parameter], dict[str, Any]], torch.optim.Optimizer]
_OPTIMIZERS = Registry("optimizer", OPTIMIZERS, "trainer/names.py OPTIMIZERS")


def register_optimizer(name: str) -> Callable[[Factory], Factory]:
    """Register `factory(params, opt) -> Optimizer` as `optim: name` (a name is taken once)."""
    return _OPTIMIZERS.register(name)


def registered() -> list[str]:
    return sorted(_OPTIMIZERS)


@register_optimizer("sgd")
def _sgd(params: list[nn.Parameter], opt: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"], nesterov=opt["nesterov"],
                           weight_decay=opt["weight_decay"])


@register_optimizer("adam")
def _adam(params: list[nn.Parameter], opt: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=opt["lr"], weight_decay=opt["weight_decay"])


def make_optimizer(opt: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer `opt['optim']` over the model's trainable parameters."""
    name = opt["optim"]
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optim {name!r}; registered: {', '.join(registered())}")
    return _OPTIMIZERS[name]([p for p in model.parameters() if p.requires_grad], opt)

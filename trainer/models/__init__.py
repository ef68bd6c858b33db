"""The model registry: `create_model(arch, num_classes, in_shape)` by name, no torchvision.

Fixed names are registered with `@register_model`; parametrised families (e.g. `wrn<depth>-<k>`)
with `@register_pattern`, a regex whose groups are passed to the factory as ints.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

from torch import nn

from nuq.registry import Registry
from trainer.names import MODEL_PATTERNS, MODELS

Factory = Callable[..., nn.Module]
_MODELS = Registry("model", MODELS, "trainer/names.py MODELS")
_PATTERNS: list[tuple[re.Pattern[str], str, Factory]] = []


def register_model(*names: str) -> Callable[[Factory], Factory]:
    """Register `factory(num_classes, in_shape)` under each name."""
    def wrap(factory: Factory) -> Factory:
        for name in names:
            _MODELS.add(name, factory)
        return factory
    return wrap


def register_pattern(regex: str, shown: str) -> Callable[[Factory], Factory]:
    """Register `factory(num_classes, in_shape, *int groups)` for names matching regex (shown as `shown`)."""
    if (shown, regex) not in MODEL_PATTERNS:
        raise ValueError(f"model pattern {shown!r} ({regex}) is not in trainer/names.py MODEL_PATTERNS; "
                         "add it there so configs can select it")

    def wrap(factory: Factory) -> Factory:
        _PATTERNS.append((re.compile(regex), shown, factory))
        return factory
    return wrap


def list_models() -> list[str]:
    """Registered names, then the parametrised families as written by users (e.g. wrn<depth>-<k>)."""
    return sorted(_MODELS) + [shown for _, shown, _ in _PATTERNS]


def create_model(arch: str, num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    """A freshly initialised model (the caller seeds torch first for repeatable weights)."""
    in_shape = tuple(int(s) for s in in_shape)
    if arch in _MODELS:
        return _MODELS[arch](num_classes, in_shape)
    for regex, _, factory in _PATTERNS:
        match = regex.fullmatch(arch)
        if match:
            return factory(num_classes, in_shape, *(int(g) for g in match.groups()))
    raise ValueError(f"unknown arch {arch!r}; registered models: {', '.join(list_models())}")


# importing the modules registers their models
from trainer.models import (bsq_resnet, cifar_resnet, imagenet_resnet, mobilenet, preact_resnet,  # noqa: E402,F401
                            resnet_mcts, small, vgg, wide_resnet)

"""The plugin interface and its registry (docs/plugins.md).

A plugin is one object per run, built from the run's full config; every hook is optional and is called
at one point of the loop (trainer/loop.py), in the order the config's `plugins` list names the plugins.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable

import torch
from torch import nn

from nuq.registry import Registry
from trainer.options import PLUGINS


class Plugin:
    """Base class: each hook does nothing until a plugin overrides it."""

    name = ""  # the registered name, set by register_plugin; also the prefix of its options and scalars
    needs_sample_index = False  # True: batches carry each sample's dataset index (begin_batch, extra_loss's index=)

    def __init__(self, opt: dict[str, Any]) -> None:
        self.opt = opt

    def configure_model(self, model: nn.Module) -> nn.Module:
        """After the model is built, before the optimizer: replace or wrap modules; return the model."""
        return model

    def begin_batch(self, index: torch.Tensor) -> None:
        """Before the forward pass of each batch, for a plugin with `needs_sample_index`: the int64 dataset
        indices of its samples (e.g. per-sample state the forward needs)."""

    def extra_loss(self, model: nn.Module, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """A term added to the task loss before backward (every g_estim differentiates the sum), or None.
        A plugin with `needs_sample_index` is also given `index=` (int64 dataset indices of the batch)."""
        return None

    def after_step(self, step: int) -> None:
        """After optimizer.step() of step `step` (0-based), e.g. to clamp parameters."""

    def after_load(self) -> None:
        """Once a fresh run has loaded the weights it starts from (init_from, init_checkpoint), before it
        trains or evaluates: e.g. a post-hoc compression of a trained model. Not called on resume (the
        checkpoint already holds its result) nor for a run from scratch. Change values in place only."""

    def on_epoch_end(self, epoch: int) -> bool:
        """At each epoch boundary (`epoch` epochs done). True: parameters changed shape or identity, and the
        trainer rebuilds the optimizer and the estimator."""
        return False

    def scalars(self) -> dict[str, float]:
        """Metrics to log now; logged as `<name>/<key>`."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State for the checkpoint: tensors and plain Python values (checkpoints load with weights_only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; called before the model's weights are loaded, so a plugin that changes
        parameter shapes restores the checkpoint's shapes here (the values come from the model's state)."""

    def start_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The upstream run's model weights (a stage's init_from or init_checkpoint) in the form this run's
        model holds them, e.g. full-precision weights turned into the plugin's representation; called after
        the carried state is loaded, before the weights are checked against the model and loaded."""
        return weights

    def carry_state(self) -> dict[str, Any] | None:
        """The part of the state that must carry over when a run starts from another run's final
        checkpoint (multi-stage runs); None: nothing carries. Saved in every checkpoint."""
        return None


_REGISTRY = Registry("plugin", PLUGINS, "a torch-free trainer/plugins/<name>_options.py (OPTIONS, may be empty)")


def register_plugin(name: str) -> Callable[[type[Plugin]], type[Plugin]]:
    """Register a Plugin class as `name`; the name must be declared in the option schema first (its
    torch-free `<name>_options.py`, or `trainer.options.declare_plugin`), and only once."""
    def wrap(cls: type[Plugin]) -> type[Plugin]:
        _REGISTRY.add(name, cls)
        cls.name = name
        return cls
    return wrap


def get_plugin_class(name: str) -> type[Plugin]:
    """The class registered as `name`, importing the shipped module trainer/plugins/<name>.py if needed."""
    if name not in _REGISTRY and importlib.util.find_spec(f"{__package__}.{name}") is not None:
        importlib.import_module(f"{__package__}.{name}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown plugin {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}") from None

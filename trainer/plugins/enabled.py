"""The plugins a run enables, in config order: each hook of the loop is one call here (docs/plugins.md)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from trainer.options import parse_names
from trainer.plugins.base import Plugin, get_plugin_class

TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parameter_layout(model: nn.Module) -> list[tuple[int, tuple[int, ...]]]:
    """Identity and shape of each parameter: what a rebuilt optimizer must agree with."""
    return [(id(p), tuple(p.shape)) for p in model.parameters()]


class Objective:
    """The loss every gradient estimator differentiates: task loss + each plugin's extra term.

    Called as `loss_fn(output, target)` by estim.base.GradientEstimator.minibatch_grad, with a third
    argument, the batch's dataset indices, when the streams carry them (a plugin asked for them).
    """

    def __init__(self, task_loss: TaskLoss, model: nn.Module, plugins: list[Plugin]) -> None:
        self.task_loss, self.model, self.plugins = task_loss, model, plugins

    def begin_batch(self, index: torch.Tensor) -> None:
        """Before the forward pass of a batch whose stream carries indices: each plugin's begin_batch."""
        for plugin in self.plugins:
            if plugin.needs_sample_index:
                plugin.begin_batch(index)

    def __call__(self, output: torch.Tensor, target: torch.Tensor,
                 index: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.task_loss(output, target)
        for plugin in self.plugins:
            extra = {"index": index} if plugin.needs_sample_index else {}
            term = plugin.extra_loss(self.model, output, target, **extra)
            if term is not None:
                loss = loss + term
        return loss


class EnabledPlugins:
    """The run's plugin objects, built from the full config's `plugins` list."""

    def __init__(self, opt: dict[str, Any]) -> None:
        self.plugins = [get_plugin_class(name)(opt) for name in parse_names(opt.get("plugins", ""))]

    def __bool__(self) -> bool:
        return bool(self.plugins)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.plugins]

    @property
    def needs_sample_index(self) -> bool:
        return any(p.needs_sample_index for p in self.plugins)

    def configure_model(self, model: nn.Module) -> nn.Module:
        for plugin in self.plugins:
            model = plugin.configure_model(model)
            if not isinstance(model, nn.Module):
                raise TypeError(f"plugin {plugin.name!r}: configure_model returned {type(model).__name__}, "
                                "not the (possibly wrapped) model")
        return model

    def objective(self, task_loss: TaskLoss, model: nn.Module) -> Objective:
        return Objective(task_loss, model, self.plugins)

    def after_step(self, step: int) -> None:
        for plugin in self.plugins:
            plugin.after_step(step)

    def after_load(self, model: nn.Module) -> None:
        """Every plugin's after_load; one that changed the parameters' shape or identity is an error."""
        for plugin in self.plugins:
            before = parameter_layout(model)
            plugin.after_load()
            if parameter_layout(model) != before:
                raise RuntimeError(f"plugin {plugin.name!r} changed the model's parameters in after_load; "
                                   "it may only change their values in place")

    def on_epoch_end(self, epoch: int, model: nn.Module) -> list[str]:
        """Call every plugin's epoch hook; the names of those that changed the parameters. A plugin that
        changed them but returned False is an error: the optimizer would keep stepping stale parameters."""
        changed = []
        for plugin in self.plugins:
            before = parameter_layout(model)
            if plugin.on_epoch_end(epoch):
                changed.append(plugin.name)
            elif parameter_layout(model) != before:
                raise RuntimeError(f"plugin {plugin.name!r} changed the model's parameters at epoch {epoch} "
                                   "but on_epoch_end returned False; return True so the optimizer is rebuilt")
        return changed

    def scalars(self) -> dict[str, float]:
        return {f"{p.name}/{key}": float(v) for p in self.plugins for key, v in p.scalars().items()}

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.state_dict() for p in self.plugins}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        """Load each enabled plugin's saved state (a plugin enabled only now keeps its fresh state)."""
        for plugin in self.plugins:
            if plugin.name in states:
                plugin.load_state_dict(states[plugin.name])

    def start_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for plugin in self.plugins:
            weights = plugin.start_weights(weights)
        return weights

    def carry_state(self) -> dict[str, dict[str, Any]]:
        carried = {p.name: p.carry_state() for p in self.plugins}
        return {name: state for name, state in carried.items() if state is not None}

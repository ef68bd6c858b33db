"""The gradient-estimator interface: the training loop asks an estimator for each step's gradient
and never knows which method runs (the pattern of torch's DDP comm hooks: one small object per run).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import nn

from estim.names import ESTIMATORS
from nuq.registry import Registry


class BatchStream(Protocol):
    """An endless, seeded, resumable stream of (inputs, targets) minibatches already on the run's device;
    (inputs, targets, dataset indices) when a trainer plugin asked for the indices."""

    def next(self) -> tuple[torch.Tensor, ...]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# (output, target) -> loss; given the indices too, (output, target, index), when the stream carries them.
# The trainer passes its objective: task loss + trainer plugins' extra terms (trainer/plugins/enabled.py).
# A stream carries indices only when a plugin asked for them, and then the loss is the trainer's objective,
# whose `begin_batch(index)` tells the plugins the batch's samples before the forward pass.
LossFn = Callable[..., torch.Tensor]


class GradientEstimator:
    """Base class. `train_stream` feeds training steps; `aux_stream` feeds measurements (variance,
    level statistics) so they never disturb the training data order."""

    def __init__(self, opt: dict[str, Any], model: nn.Module, loss_fn: LossFn,
                 train_stream: BatchStream, aux_stream: BatchStream) -> None:
        self.opt = opt
        self.model = model
        self.loss_fn = loss_fn
        self.train_stream = train_stream
        self.aux_stream = aux_stream

    def params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def minibatch_grad(self, stream: BatchStream) -> tuple[list[torch.Tensor], float]:
        """Gradient and loss of one minibatch drawn from `stream`; every estimator evaluates the loss
        through `batch_loss`, so each differentiates the same objective."""
        loss = self.batch_loss(self.model, stream.next())
        grads = torch.autograd.grad(loss, self.params())
        return [g.detach() for g in grads], float(loss.detach())

    def batch_loss(self, forward: Callable[[torch.Tensor], torch.Tensor],
                   batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The objective of one batch (inputs, targets[, dataset indices]) through `forward`; the indices,
        when the stream carries them, reach the plugins before the forward pass (per-sample state)."""
        x, y, *index = batch
        if index:
            self.loss_fn.begin_batch(index[0])  # type: ignore[attr-defined]
        return self.loss_fn(forward(x), y, *index)

    def grad(self, stream: BatchStream | None = None) -> tuple[list[torch.Tensor], float]:
        """The gradient the optimizer steps with (one tensor per parameter) and the training loss."""
        raise NotImplementedError

    def agree_on_stop(self, pending: bool) -> bool:
        """Called by the loop at each step start with this process's stop flag (a rank's SIGTERM/SIGUSR2):
        whether the run stops at this step. An estimator whose ranks exchange gradients must return the
        same answer on every rank (any rank's flag), so that all ranks stop at the same step."""
        return pending

    def on_step(self, step: int) -> None:
        """Called by the loop before step `step`'s gradient: schedule hooks (level re-fits)."""

    def scalars(self) -> dict[str, float]:
        """Scalars to log now (e.g. bits, levels/<i>, multiplier, nb_error)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Estimator state for checkpoints: tensors and plain Python values only (loaded weights_only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


_REGISTRY = Registry("estimator", ESTIMATORS, "estim/names.py ESTIMATORS")


def register_estimator(name: str) -> Callable[[type[GradientEstimator]], type[GradientEstimator]]:
    """Register an estimator class as `g_estim: name` (a name is taken once; it must be in estim/names.py
    ESTIMATORS, the names the option schema offers)."""
    return _REGISTRY.register(name)


def get_estimator_class(name: str) -> type[GradientEstimator]:
    import estim
    estim.load_all()  # importing every module registers every estimator
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown g_estim {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


@register_estimator("sgd")
class SGDEstimator(GradientEstimator):
    """Plain minibatch SGD: the baseline."""

    def grad(self, stream: BatchStream | None = None) -> tuple[list[torch.Tensor], float]:
        return self.minibatch_grad(stream or self.train_stream)

    def scalars(self) -> dict[str, float]:
        """Full-precision gradients: 32 bits per coordinate, logged so tables compare every method."""
        return {"bits": 32.0}

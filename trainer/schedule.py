"""Learning-rate schedules by the `lr_schedule` option: a registry (the names the schema offers are
trainer/names.py LR_SCHEDULES), with an optional linear warmup in front of either.

`step` is the paper's code: x `lr_decay_rate` every N iterations or at milestones. `cosine` is ActNN's
(NVIDIA's recipe): per epoch, lr/2 (1 + cos(pi e / E)) for epoch e after the warmup and E epochs after it.
The warmup, `lr_warmup_epochs` W > 0, sets epoch e < W to lr (e + 1) / W, as that recipe does.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from nuq.registry import Registry
from trainer.names import LR_SCHEDULES
from trainer.options import parse_milestones

# (iteration, the run's config, iterations per epoch, total iterations) -> lr after the warmup
Schedule = Callable[[int, Mapping[str, Any], int, int], float]
_SCHEDULES = Registry("lr schedule", LR_SCHEDULES, "trainer/names.py LR_SCHEDULES")


def registered() -> list[str]:
    return sorted(_SCHEDULES)


def decayed(iteration: int, base_lr: float, lr_decay_epoch: str | int, lr_decay_rate: float) -> float:
    """Step decay: `lr_decay_epoch` '' keeps the lr constant; an int N (or 'N') decays every N iterations;
    a comma list ('40000,60000') decays once at each listed iteration."""
    every, milestones = parse_milestones(lr_decay_epoch)
    if every is not None:
        if every <= 0:
            raise ValueError(f"lr_decay_epoch must be a positive interval or a comma list of iterations, got {every}")
        decays = iteration // every
    else:
        decays = sum(1 for m in milestones if iteration >= m)
    return base_lr * lr_decay_rate ** decays


@_SCHEDULES.register("step")
def _step(iteration: int, opt: Mapping[str, Any], epoch_iters: int, niters: int) -> float:
    return decayed(iteration, opt["lr"], opt["lr_decay_epoch"], opt["lr_decay_rate"])


@_SCHEDULES.register("cosine")
def _cosine(iteration: int, opt: Mapping[str, Any], epoch_iters: int, niters: int) -> float:
    warmup = opt["lr_warmup_epochs"]
    epoch, epochs = iteration // epoch_iters - warmup, niters / epoch_iters - warmup
    return 0.5 * (1 + math.cos(math.pi * epoch / epochs)) * opt["lr"]


def lr_at(iteration: int, opt: Mapping[str, Any], epoch_iters: int, niters: int) -> float:
    """The learning rate of step `iteration` (0-based) of a run of `niters` steps of `epoch_iters` per epoch."""
    name, warmup = opt["lr_schedule"], opt["lr_warmup_epochs"]
    if name not in _SCHEDULES:
        raise ValueError(f"unknown lr_schedule {name!r}; registered: {', '.join(registered())}")
    if warmup and warmup * epoch_iters >= niters:
        raise ValueError(f"lr_warmup_epochs {warmup} is the whole run ({niters / epoch_iters:g} epochs); "
                         "use fewer warmup epochs than the run has")
    epoch = iteration // epoch_iters
    if epoch < warmup:
        return opt["lr"] * (epoch + 1) / warmup
    return _SCHEDULES[name](iteration, opt, epoch_iters, niters)

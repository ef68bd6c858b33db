"""Learning-rate schedule of the paper's code: step decay by `lr_decay_rate` every N iterations or at milestones."""
from __future__ import annotations

from trainer.options import parse_milestones


def lr_at(iteration: int, base_lr: float, lr_decay_epoch: str | int, lr_decay_rate: float) -> float:
    """The learning rate of step `iteration` (0-based).

    `lr_decay_epoch` '' keeps it constant; an int N (or 'N') decays every N iterations;
    a comma list ('40000,60000') decays once at each listed iteration.
    """
    every, milestones = parse_milestones(lr_decay_epoch)
    if every is not None:
        if every <= 0:
            raise ValueError(f"lr_decay_epoch must be a positive interval or a comma list of iterations, got {every}")
        decays = iteration // every
    else:
        decays = sum(1 for m in milestones if iteration >= m)
    return base_lr * lr_decay_rate ** decays

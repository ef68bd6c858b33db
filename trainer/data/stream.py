"""Seeded, resumable minibatch streams (the `estim.base.BatchStream` protocol) and evaluation batches.

Each epoch is a permutation drawn from a generator seeded by (seed, epoch), so the state to resume
is just (epoch, position) plus the augmentation generator's state. The last partial batch of an epoch
is dropped, like the paper's loaders with drop_last. With `with_index` each batch also carries the
dataset index of each sample (for plugins that keep per-sample state).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from trainer.data import Dataset, Split


class BatchStream:
    """Endless training minibatches of `split`, prepared (and augmented) on `device`: (inputs, targets),
    or (inputs, targets, int64 dataset indices) with `with_index`."""

    def __init__(self, data: Dataset, split: Split, batch_size: int, seed: int, device: torch.device,
                 augment: bool = True, with_index: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(split) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the {data.name} split ({len(split)} examples)")
        self.data, self.split, self.batch_size = data, split, batch_size
        self.seed, self.device, self.augment, self.with_index = seed, device, augment, with_index
        self.epoch, self.pos = 0, 0
        self.aug_gen = torch.Generator().manual_seed(seed + 7919)
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.split), generator=gen)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.split) // self.batch_size

    def next(self) -> tuple[torch.Tensor, ...]:
        if self.pos + self.batch_size > len(self.split):
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        x, y = self.split.get(idx)
        x = self.data.prepare(x.to(self.device, non_blocking=True))
        if self.augment:
            x = self.data.augment(x, self.aug_gen)
        if self.with_index:
            return x, y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)
        return x, y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "aug_gen": self.aug_gen.get_state(), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # the seed stays this stream's own (seed + rank), so every rank can load rank 0's checkpoint
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.aug_gen.set_state(state["aug_gen"])
        self._perm = self._permutation(self.epoch)


def evaluate_batches(data: Dataset, split: Split, batch_size: int,
                     device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The whole split in order, prepared but never augmented."""
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        x, y = split.get(idx)
        yield data.prepare(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)

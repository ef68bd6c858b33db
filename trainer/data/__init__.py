"""Datasets by name, held in memory as tensors (no downloads, no DataLoader workers).

`load_dataset(name, folder)` returns a `Dataset`: train/test splits, the number of classes, the input
shape and the per-batch transforms (normalisation, augmentation) that the batch streams apply on the
run's device. Loaders are registered with `@register_dataset`; `trainer.data.formats` holds them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch


class DataError(ValueError):
    """A missing or malformed data folder; the message names the folder, the files and how to get them."""


class Split(Protocol):
    """Indexable examples: `get(indices)` -> (inputs, int64 targets) on the CPU or already on the device."""

    def __len__(self) -> int: ...

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class TensorSplit:
    """A split held as two tensors (uint8 or float inputs, int64 targets)."""
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"inputs ({len(self.x)}) and targets ({len(self.y)}) differ in length")

    def __len__(self) -> int:
        return len(self.y)

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = indices.to(self.x.device)
        return self.x[indices], self.y[indices]

    def to(self, device: torch.device) -> "TensorSplit":
        return TensorSplit(self.x.to(device), self.y.to(device))


Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _identity(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x


@dataclass
class Dataset:
    """`prepare` turns a raw input batch (on the device) into model input; `augment` adds training-only
    randomness drawn from the stream's CPU generator (so it resumes exactly)."""
    name: str
    train: Split
    test: Split
    num_classes: int
    in_shape: tuple[int, ...]
    prepare: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda x: x.float())
    augment: Transform = field(default=_identity)

    def to(self, device: torch.device) -> "Dataset":
        """Move in-memory splits to the device once (small datasets), so batching never copies."""
        def move(split: Split) -> Split:
            return split.to(device) if isinstance(split, TensorSplit) else split
        return Dataset(self.name, move(self.train), move(self.test), self.num_classes, self.in_shape,
                       self.prepare, self.augment)


from nuq.registry import Registry  # noqa: E402
from trainer.names import DATASETS  # noqa: E402

Loader = Callable[[str], Dataset]
_DATASETS = Registry("dataset", DATASETS, "trainer/names.py DATASETS")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register `loader(folder) -> Dataset` as `dataset: name` (a name is taken once; it must be in
    trainer/names.py DATASETS, the names the option schema offers)."""
    return _DATASETS.register(name)


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(name: str, folder: str) -> Dataset:
    """Load dataset `name` from `folder` (ignored by the embedded and synthetic datasets)."""
    try:
        loader = _DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}") from None
    return loader(folder)


from trainer.data import formats  # noqa: E402,F401  (registers the loaders)
from trainer.data.stream import BatchStream, evaluate_batches  # noqa: E402,F401

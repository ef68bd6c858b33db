"""Small models: MNIST `cnn`/`mlp`, `linear` (logistic regression) and the 8x8-digits models.

They accept any input shape: fully connected layers are sized from `in_shape`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models import register_model


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@register_model("linear")
def linear(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    """Multinomial logistic regression."""
    return _mlp([math.prod(in_shape), num_classes])


@register_model("mlp")
def mlp(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    """MNIST MLP with two hidden layers of 1024."""
    return _mlp([math.prod(in_shape), 1024, 1024, num_classes])


@register_model("digits_mlp")
def digits_mlp(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    """The default model: trains on the 8x8 digits to >90% in a few hundred CPU steps."""
    return _mlp([math.prod(in_shape), 128, num_classes])


class ConvNet(nn.Module):
    """Two 'same'-padded conv + 2x2 max-pool stages, then two fully connected layers."""

    def __init__(self, in_shape: Sequence[int], channels: tuple[int, int], kernel: int,
                 hidden: int, num_classes: int) -> None:
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, channels[0], kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel, padding=kernel // 2)
        self.fc1 = nn.Linear(channels[1] * (h // 4) * (w // 4), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _image_shape(in_shape: Sequence[int], arch: str) -> Sequence[int]:
    if len(in_shape) != 3 or in_shape[1] < 4 or in_shape[2] < 4:
        raise ValueError(f"arch {arch!r} needs (channels, height, width) images of at least 4x4, got {tuple(in_shape)}")
    return in_shape


@register_model("cnn")
def cnn(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    """MNIST CNN (32 and 64 5x5 filters, 512 hidden)."""
    return ConvNet(_image_shape(in_shape, "cnn"), (32, 64), 5, 512, num_classes)


@register_model("digits_cnn")
def digits_cnn(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    return ConvNet(_image_shape(in_shape, "digits_cnn"), (16, 32), 3, 64, num_classes)

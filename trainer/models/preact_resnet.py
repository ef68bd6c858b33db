"""The ActNN study's pre-activation CIFAR ResNets (preact_resnet20/56/110).

As its research code (NVIDIA's ResNetBuilder): blocks BN-ReLU-conv3x3-BN-ReLU-conv3x3, widths 16/32/64,
a strided or widening block's shortcut is a 1x1 conv of the pre-activated input, the head is
BN-ReLU-global average pool-FC, and every conv/linear weight is kaiming-normal with fan_in. ReLUs are
nn.ReLU modules so plugins can swap them (actnn_relu_mask).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainer.models import register_model


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.downsample = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    """6n+2 layers: stem conv, three stages of n blocks (16, 32, 64 channels), BN-ReLU-pool-FC."""

    def __init__(self, depth: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"preact ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(PreActBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.bn, self.relu = nn.BatchNorm2d(64), nn.ReLU()
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


def _register(depth: int) -> None:
    @register_model(f"preact_resnet{depth}")
    def factory(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
        return PreActResNet(depth, num_classes, in_shape[0])


for _depth in (20, 56, 110):
    _register(_depth)

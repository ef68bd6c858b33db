"""The CIFAR ResNet of the BSQ study (bearpaw/pytorch-classification): BasicBlocks x [n, n, n], widths
16/32/64, ReLU6 activations as modules (the `bsq` plugin quantizes after each), and option-B shortcuts
(1x1 conv + BN, named `downsample`) where the shape changes. `bsq_resnet20` is the study's ResNet-20."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainer.models import register_model


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU6()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU6()
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + (x if self.downsample is None else self.downsample(x)))


class BSQResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act = nn.ReLU6()
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.act(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _register(depth: int) -> None:
    @register_model(f"bsq_resnet{depth}")
    def factory(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
        return BSQResNet(depth, num_classes, in_shape[0])


for _depth in (8, 20):
    _register(_depth)

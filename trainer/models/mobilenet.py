"""MobileNet (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018), the CIFAR variants of the ILKP study
(docs/ilkp.md): a stride-1 3x3 stem and fewer early strides, so 32x32 inputs end at 2x2 (MobileNet) or 4x4
(MobileNetV2) before the global average pool.

Both expose `separable_convs()`, the depthwise 3x3 and the pointwise (1x1) convs of their blocks in order:
the layers inter-layer kernel sharing works on (trainer/plugins/ilkp.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models import register_model

# (output channels, stride) of MobileNet's 13 separable blocks; stem 32 channels, classifier on 1024
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                    (512, 1), (512, 1), (1024, 2), (1024, 1))
# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2; CIFAR: the first two strides 1
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 1), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


def ilkp_init(model: nn.Module) -> None:
    """The ILKP study's initialisation (its MobileNets and VGG): He (fan-out) convs, unit BN, N(0, 0.01)
    linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class Separable(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU, pointwise conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = nn.Sequential(*_conv_bn(cin, cin, 3, stride, groups=cin), nn.ReLU(inplace=True))
        self.pw = nn.Sequential(*_conv_bn(cin, cout, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNet(nn.Module):
    """A 3x3 stem, separable blocks, global average pool, linear classifier."""

    def __init__(self, blocks: Sequence[tuple[int, int]], num_classes: int, in_channels: int,
                 stem: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, stem, 3), nn.ReLU(inplace=True))
        layers, cin = [], stem
        for cout, stride in blocks:
            layers.append(Separable(cin, cout, stride))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        ilkp_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def separable_convs(self) -> tuple[list[nn.Conv2d], list[nn.Conv2d]]:
        """(depthwise 3x3 convs, pointwise convs) of the blocks, in order."""
        return [b.dw[0] for b in self.layers], [b.pw[0] for b in self.layers]


class InvertedResidual(nn.Module):
    """[pointwise expansion + BN + ReLU6,] depthwise 3x3 + BN + ReLU6, linear pointwise projection + BN;
    a residual connection when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
                   *_conv_bn(hidden, cout, 1)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out

    def convs(self) -> tuple[nn.Conv2d, list[nn.Conv2d]]:
        """(the depthwise conv, the pointwise convs in order)."""
        convs = [m for m in self.conv if isinstance(m, nn.Conv2d)]
        return convs[-2], [c for c in convs if c.kernel_size == (1, 1)]


class MobileNetV2(nn.Module):
    """A 3x3 stem, inverted residual stages, a 1x1 conv to 1280 channels, global average pool, dropout 0.2,
    linear classifier."""

    def __init__(self, stages: Sequence[tuple[int, int, int, int]], num_classes: int, in_channels: int,
                 stem: int = 32, last: int = 1280) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, stem, 3), nn.ReLU6(inplace=True))
        blocks, cin = [], stem
        for t, c, n, s in stages:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(cin, last, 1), nn.ReLU6(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
        ilkp_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.blocks(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def separable_convs(self) -> tuple[list[nn.Conv2d], list[nn.Conv2d]]:
        """(depthwise 3x3 convs, pointwise convs) of the inverted residual blocks, in order (the head's 1x1
        conv is not a block's, as in the study)."""
        parts = [b.convs() for b in self.blocks]
        return [dw for dw, _ in parts], [pw for _, pws in parts for pw in pws]


@register_model("mobilenet_cifar")
def mobilenet_cifar(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    return MobileNet(MOBILENET_BLOCKS, num_classes, in_shape[0])


@register_model("mobilenetv2_cifar")
def mobilenetv2_cifar(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    return MobileNetV2(MOBILENETV2_STAGES, num_classes, in_shape[0])

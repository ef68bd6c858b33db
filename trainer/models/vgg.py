"""VGG-16 with batch norm (Simonyan & Zisserman 2015, configuration D), the CIFAR variant of the ILKP study:
thirteen 3x3 convs (no bias) + BN + ReLU, five 2x2 max-pools, one linear classifier on the 512 features.

The pools round up (ceil_mode) so inputs smaller than 32x32 (the 8x8 digits) still reach 1x1; on 32x32 that
is the plain 2x2 pool.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainer.models import register_model
from trainer.models.mobilenet import ilkp_init

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, cfg: Sequence[int | str], num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)
        ilkp_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    return VGG(VGG16, num_classes, in_shape[0])

"""The `resnet20` of the weight/activation-quantization study (onion-rain/MCTS at 9868b20), as
`resnet20_mcts`: not He et al.'s 0.27 M-parameter ResNet-20 (`resnet20`), which stays as it is.

Stage widths 16 -> 64, 128, 256, three blocks each; a block is conv3x3(in->mid) BN ReLU conv3x3(mid->out)
with mid = out/4, a bias-free 1x1 conv shortcut whenever the shape changes, and its second BN applied
after the residual add: out = ReLU(BN(conv2 + shortcut)). 1,110,522 parameters for 10 classes.
`resnet20_mcts_small` divides every width by 4 (the spec's small CPU experiment; 71 k parameters). The
`wq` plugin (trainer/plugins/wq.py) quantizes every conv inside the blocks, 1x1 shortcuts included.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models import register_model

STAGES = ((64, 1), (128, 2), (256, 2))  # (out channels, stride of the first block)
BLOCKS_PER_STAGE = 3
STEM = 16
MID_DIVISOR = 4


class MctsBlock(nn.Module):
    """conv3x3(in->out/4) BN ReLU conv3x3(out/4->out), then BN after the add with the shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // MID_DIVISOR
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return F.relu(self.bn2(out + self.shortcut(x)))


class MctsResNet(nn.Module):
    """Stem conv3x3(c->16) BN ReLU, three stages of blocks, global average pool, Linear(256 -> classes);
    every width divided by `width_divisor`."""

    def __init__(self, num_classes: int, in_channels: int, width_divisor: int = 1) -> None:
        super().__init__()
        stem = STEM // width_divisor
        self.conv = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(stem)
        blocks, cin = [], stem
        for cout, stride in ((c // width_divisor, s) for c, s in STAGES):
            for i in range(BLOCKS_PER_STAGE):
                blocks.append(MctsBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("resnet20_mcts")
def resnet20_mcts(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    return MctsResNet(num_classes, in_shape[0])


@register_model("resnet20_mcts_small")
def resnet20_mcts_small(num_classes: int, in_shape: Sequence[int]) -> nn.Module:
    return MctsResNet(num_classes, in_shape[0], width_divisor=4)

"""CIFAR ResNets (He et al. 2016, section 4.2) as a user brings their own architecture to greencompress.

Written from the description of `resnet20-12fca82f.th` (see ../shared/models/README.md): a 3x3 stem
to 16 channels, three stages of basic blocks at 16, 32 and 64 channels, parameter-free "option A"
shortcuts, global average pooling and a linear classifier. Parameter names match that checkpoint.
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by 2 and zero-pad the channels equally on both sides. No parameters."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.pad_each_side = extra_channels // 2

    def forward(self, x):
        return functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_each_side, self.pad_each_side))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut = ZeroPadShortcut(out_channels - in_channels) if changes_shape else nn.Identity()

    def forward(self, x):
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return functional.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_channels = [], 16
        for index, channels in enumerate((16, 32, 64)):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for 32x32 inputs: 3 blocks per stage, 0.27 M parameters."""
    return CifarResNet(blocks_per_stage=3, num_classes=num_classes)

"""The CIFAR ResNets of He et al. (2016): 3 stages of 16/32/64 channels, 6n+2 layers.

ResNet-32 (n = 5) with a 64-d feature is the backbone of every CIFAR-100 result in the
DGR and LT-CIL papers; ResNet-20 (n = 3) is the CPU-sized stand-in for the development
set. Shortcuts that change shape use a 1x1 convolution with batch norm, as FACIL's
``resnet32`` (the code base the DGR reference builds on) does.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import register_backbone


def staged_forward(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """The forward of the CIFAR-style ResNets (``conv1``, ``bn1``, ``stages``, ``pool``): stem,
    then the stages, each stage's output kept (PODNet distils them), then the pooled feature."""
    out = torch.relu(net.bn1(net.conv1(x)))
    maps = []
    for stage in net.stages:
        out = stage(out)
        maps.append(out)
    return {"features": torch.flatten(net.pool(out), 1), "maps": maps}


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, last_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.last_relu = last_relu
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return self.relu(out) if self.last_relu else out


class CifarResNet(nn.Module):
    """``last_relu=False`` drops the final ReLU, as LUCIR/PODNet do for a cosine classifier."""

    def __init__(self, blocks_per_stage: int, in_channels: int = 3, width: int = 16, last_relu: bool = True) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths):
            layers = []
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                is_last = stage == len(widths) - 1 and i == blocks_per_stage - 1
                layers.append(BasicBlock(in_planes, planes, stride, last_relu=last_relu or not is_last))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        return staged_forward(self, x)


@register_backbone("resnet32")
def resnet32(in_channels: int = 3, last_relu: bool = True) -> CifarResNet:
    return CifarResNet(5, in_channels=in_channels, last_relu=last_relu)


@register_backbone("resnet20")
def resnet20(in_channels: int = 3, last_relu: bool = True) -> CifarResNet:
    return CifarResNet(3, in_channels=in_channels, last_relu=last_relu)


@register_backbone("resnet8")
def resnet8(in_channels: int = 3, last_relu: bool = True) -> CifarResNet:
    return CifarResNet(1, in_channels=in_channels, last_relu=last_relu)

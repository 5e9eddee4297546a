"""torchvision's ResNet-18 as a 512-d feature extractor (ImageNet-Subset, ImageNet-1k, Food-101).

Randomly initialised, as in the paper (no pre-training). The stages are run by hand so
their outputs are available to PODNet.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..registry import register_backbone


class ResNet18Features(nn.Module):
    def __init__(self, in_channels: int = 3, last_relu: bool = True) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        if not last_relu:
            self.stages[-1][-1].relu = _NoLastRelu(self.stages[-1][-1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        out = self.stem(x)
        maps = []
        for stage in self.stages:
            out = stage(out)
            maps.append(out)
        return {"features": torch.flatten(self.pool(out), 1), "maps": maps}


class _NoLastRelu(nn.Module):
    """torchvision's BasicBlock applies its one ReLU module twice; skip only the second call."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % 2 == 0:
            return x
        return torch.relu(x)


@register_backbone("resnet18")
def resnet18(in_channels: int = 3, last_relu: bool = True) -> ResNet18Features:
    return ResNet18Features(in_channels=in_channels, last_relu=last_relu)

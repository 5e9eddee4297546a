"""A small convolutional network for tiny images (``digits``' 8x8, ``synthetic``'s 16x16).

Sized so a whole quickstart run takes seconds on a laptop CPU while still having the
BatchNorm/ReLU/pooling structure the ResNets have, so every method's code path is exercised.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import register_backbone


class ConvNet(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 32, last_relu: bool = True) -> None:
        super().__init__()

        def block(cin: int, cout: int, relu: bool = True) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)]
            if relu:
                layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        self.stages = nn.ModuleList(
            [block(in_channels, width), nn.Sequential(nn.MaxPool2d(2), block(width, 2 * width, relu=last_relu))]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 2 * width

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        maps = []
        out = x
        for stage in self.stages:
            out = stage(out)
            maps.append(out)
        return {"features": torch.flatten(self.pool(out), 1), "maps": maps}


@register_backbone("convnet")
def convnet(in_channels: int = 3, last_relu: bool = True) -> ConvNet:
    return ConvNet(in_channels=in_channels, last_relu=last_relu)

"""The ResNets the LT-CIL code builds for PODNet (``networks/resnet32_podnet.py`` and
``networks/resnet18_podnet.py`` of xialeiliu/Long-Tailed-CIL; ``main_incremental.py`` appends
``_podnet`` to the network name of any PODNet approach, GVAlign's included).

They differ from the plain backbones in where the activations are, which decides what
POD-spatial distils:

- ``resnet32_podnet`` (and the CPU-sized ``resnet20_podnet``/``resnet8_podnet``): no ReLU after
  the residual addition in any block (``last_relu=False`` for every layer), so each stage's map
  is a pre-activation sum; shortcuts that halve the resolution are parameter-free ("option A",
  ``DownsampleA``: every second pixel, the extra channels zero); weights drawn from
  ``N(0, 2 / (k * k * out_channels))``.
- ``resnet18_podnet``: a 3x3 stride-1 stem (then the usual max-pool), 1x1-conv + BN shortcuts,
  in each stage only the first block ends with a ReLU, no ReLU between stages, and the last
  BatchNorm of every residual branch initialised to zero (each block starts as the identity).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import register_backbone
from .resnet_cifar import staged_forward

_PODNET_VARIANTS = {
    "resnet32": "resnet32_podnet",
    "resnet20": "resnet20_podnet",
    "resnet8": "resnet8_podnet",
    "resnet18": "resnet18_podnet",
}


def podnet_backbone_name(configured: str) -> str:
    """The PODNet variant of a registered backbone (itself where there is none: ``convnet``)."""
    return _PODNET_VARIANTS.get(configured, configured)


class OptionAShortcut(nn.Module):
    """``DownsampleA``: ``AvgPool2d(kernel_size=1, stride=2)`` (every second pixel) and the
    channels doubled with zeros. No parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if stride != 2 or planes != 2 * in_planes:
            raise ValueError(f"option-A shortcut: needs stride 2 and doubled channels, got {in_planes}->{planes}, stride {stride}")
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return torch.cat([x, torch.zeros_like(x)], dim=1)


class PodnetBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then a ReLU only if ``relu_out``."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: nn.Module, relu_out: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut
        self.relu_out = relu_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return torch.relu(out) if self.relu_out else out


class PodnetCifarResNet(nn.Module):
    """``resnet32_podnet``'s ``CifarResNet``: 3 stages of 16/32/64 channels, no block ReLU."""

    def __init__(self, blocks_per_stage: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths):
            blocks = []
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                shortcut = OptionAShortcut(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()
                blocks.append(PodnetBlock(in_planes, planes, stride, shortcut, relu_out=False))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        return staged_forward(self, x)


class PodnetResNet18(nn.Module):
    """``resnet18_podnet``'s ``ResNet(BasicBlock, [2, 2, 2, 2])`` with its defaults
    (``zero_init_residual=True, nf=64, last_relu=False, initial_kernel=3``)."""

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        in_planes = width
        for stage in range(4):
            planes = width * 2**stage
            stride = 1 if stage == 0 else 2
            shortcut: nn.Module = nn.Identity()
            if stride != 1 or in_planes != planes:
                shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            # ``_make_layer``: the first block keeps BasicBlock's default ReLU, the last does not.
            stages.append(
                nn.Sequential(
                    PodnetBlock(in_planes, planes, stride, shortcut, relu_out=True),
                    PodnetBlock(planes, planes, 1, nn.Identity(), relu_out=False),
                )
            )
            in_planes = planes
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, PodnetBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        out = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        maps = []
        for stage in self.stages:
            out = stage(out)
            maps.append(out)
        return {"features": torch.flatten(self.pool(out), 1), "maps": maps}


# ``last_relu`` is accepted for the engine's uniform call (PODNet asks for no last ReLU, which
# these networks never have).
@register_backbone("resnet32_podnet")
def resnet32_podnet(in_channels: int = 3, last_relu: bool = False) -> PodnetCifarResNet:
    return PodnetCifarResNet(5, in_channels=in_channels)


@register_backbone("resnet20_podnet")
def resnet20_podnet(in_channels: int = 3, last_relu: bool = False) -> PodnetCifarResNet:
    return PodnetCifarResNet(3, in_channels=in_channels)


@register_backbone("resnet8_podnet")
def resnet8_podnet(in_channels: int = 3, last_relu: bool = False) -> PodnetCifarResNet:
    return PodnetCifarResNet(1, in_channels=in_channels)


@register_backbone("resnet18_podnet")
def resnet18_podnet(in_channels: int = 3, last_relu: bool = False) -> PodnetResNet18:
    return PodnetResNet18(in_channels=in_channels)

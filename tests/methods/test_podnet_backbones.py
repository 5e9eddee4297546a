"""PODNet's reference backbones (LT-CIL's ``resnet32_podnet.py``, ``resnet18_podnet.py``): their
structure, and their output against a forward built by hand from the reference code."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cil_core.backbones.podnet_resnet import OptionAShortcut, PodnetBlock, podnet_backbone_name
from cil_core.methods.podnet import Options, PODNet
from cil_core.registry import get_backbone

from transcription import ref_podnet_cifar_forward


def _randomise_batch_norms(net: torch.nn.Module) -> None:
    """Non-trivial affine BN parameters (the zero-initialised ones included) so a misplaced
    ReLU or shortcut changes the output."""
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g)
            m.bias.data = torch.randn(m.bias.shape, generator=g)


def test_cifar_variant_has_parameter_free_shortcuts_and_no_block_relu():
    net = get_backbone("resnet32_podnet")()
    shortcuts = [b.shortcut for stage in net.stages for b in stage if isinstance(b.shortcut, OptionAShortcut)]
    assert len(shortcuts) == 2 and all(len(list(s.parameters())) == 0 for s in shortcuts)
    blocks = [b for stage in net.stages for b in stage]
    assert len(blocks) == 15 and not any(b.relu_out for b in blocks)
    # as many parameters as the reference's resnet32_podnet without its fc (counted from its code)
    assert sum(p.numel() for p in net.parameters()) == 463_504
    x = torch.randn(2, 16, 8, 8)
    y = OptionAShortcut(16, 32, 2)(x)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))


def test_cifar_variant_equals_the_reference_forward():
    for name in ("resnet32_podnet", "resnet8_podnet"):
        net = get_backbone(name)()
        _randomise_batch_norms(net)
        x = torch.randn(3, 3, 16, 16)
        for train in (True, False):
            net.train(train)
            with torch.no_grad():
                got, want = net(x), ref_podnet_cifar_forward(net, x)
            assert torch.allclose(got["features"], want["features"], rtol=1e-5, atol=1e-6)
            for a, b in zip(got["maps"], want["maps"]):
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
            assert (got["maps"][0] < 0).any()  # pre-activation maps: POD sees negative values


def _ref_resnet18_podnet_forward(net, x):
    """``resnet18_podnet.py``'s ``ResNet.forward`` (``last_relu=False``): 3x3 stride-1 stem,
    ReLU, max-pool; per layer ``BasicBlock(..., downsample)`` with its final ReLU, then
    ``BasicBlock(..., last_relu=False)``; ``end_relu`` is the identity between layers; the
    features are the average-pooled raw ``x_4``."""

    def block(b, h, relu_out):
        identity = h
        out = F.relu(b.bn1(b.conv1(h)))
        out = b.bn2(b.conv2(out))
        if not isinstance(b.shortcut, torch.nn.Identity):
            identity = b.shortcut[1](b.shortcut[0](h))
        out = out + identity
        return F.relu(out) if relu_out else out

    h = F.max_pool2d(F.relu(net.bn1(net.conv1(x))), kernel_size=3, stride=2, padding=1)
    maps = []
    for stage in net.stages:
        h = block(stage[1], block(stage[0], h, True), False)
        maps.append(h)
    return {"features": F.adaptive_avg_pool2d(h, 1).flatten(1), "maps": maps}


def test_imagenet_variant_structure_and_forward():
    net = get_backbone("resnet18_podnet")()
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    blocks = [b for m in net.modules() if isinstance(m, PodnetBlock) for b in [m]]
    assert len(blocks) == 8 and all(float(b.bn2.weight.detach().abs().sum()) == 0 for b in blocks)  # zero-init residuals
    assert [b.relu_out for b in blocks] == [True, False] * 4
    _randomise_batch_norms(net)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        got, want = net(x), _ref_resnet18_podnet_forward(net, x)
    assert torch.allclose(got["features"], want["features"], rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got["maps"], want["maps"]))


def test_podnet_picks_the_reference_variant(make_learner):
    method = PODNet(learner=make_learner(), options=Options())
    assert method.backbone_name("resnet32") == "resnet32_podnet"
    assert method.backbone_name("resnet18") == "resnet18_podnet"
    assert method.backbone_name("convnet") == "convnet" == podnet_backbone_name("convnet")
    plain = PODNet(learner=make_learner(), options=Options(reference_backbone=False))
    assert plain.backbone_name("resnet32") == "resnet32"

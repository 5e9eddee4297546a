"""Device augmentation: same crop distribution as torchvision, exact geometry, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import RandomResizedCrop

from cil_core.data.augment import (
    CropParams,
    DeviceAugment,
    crop_resize,
    pil_test_transform,
    pil_train_transform,
    sample_random_crop_params,
    sample_resized_crop_params,
)

N = 20_000
SIDE = 40  # a 32x32 CIFAR image padded by 4


def torchvision_draws(n: int, height: int, width: int, scale=(0.08, 1.0)) -> np.ndarray:
    torch.manual_seed(0)
    img = torch.zeros(1, height, width)
    return np.array([RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)], dtype=float)


def ours(n: int, height: int, width: int, seed: int = 0, scale=(0.08, 1.0)) -> CropParams:
    return sample_resized_crop_params(n, height, width, generator=torch.Generator().manual_seed(seed), scale=scale)


def test_resized_crop_distribution_matches_torchvision():
    ref = torchvision_draws(N, SIDE, SIDE)  # columns: top, left, h, w
    p = ours(N, SIDE, SIDE)
    top, left, h, w = (t.double().numpy() for t in (p.top, p.left, p.height, p.width))
    assert ((h >= 1) & (h <= SIDE) & (w >= 1) & (w <= SIDE)).all()
    assert ((top >= 0) & (top + h <= SIDE) & (left >= 0) & (left + w <= SIDE)).all()
    area, ref_area = h * w / SIDE**2, ref[:, 2] * ref[:, 3] / SIDE**2
    assert abs(area.mean() - ref_area.mean()) < 0.01
    assert abs(np.log(w / h).mean() - np.log(ref[:, 3] / ref[:, 2]).mean()) < 0.01
    assert abs(np.log(w / h).std() - np.log(ref[:, 3] / ref[:, 2]).std()) < 0.01
    # Offsets relative to their range (uniform in [0, 1] when the draw is right).
    rel = top / np.maximum(SIDE - h, 1)
    ref_rel = ref[:, 0] / np.maximum(SIDE - ref[:, 2], 1)
    assert abs(rel.mean() - ref_rel.mean()) < 0.015
    # Whole histograms of the crop side lengths: total variation distance small.
    for ours_col, ref_col in ((h, ref[:, 2]), (w, ref[:, 3])):
        a = np.bincount(ours_col.astype(int), minlength=SIDE + 1) / N
        b = np.bincount(ref_col.astype(int), minlength=SIDE + 1) / N
        assert 0.5 * np.abs(a - b).sum() < 0.04
    # Absolute anchor: ~0.49 for scale (0.08, 1) on a square (large draws that do not fit are redrawn).
    assert 0.47 < area.mean() < 0.51


def test_fallback_is_torchvisions_centre_crop():
    # A wide 10x100 image with a large minimum scale: no attempt fits, so both fall back.
    ref = torchvision_draws(50, 10, 100, scale=(0.9, 1.0))
    p = ours(50, 10, 100, scale=(0.9, 1.0))
    got = np.stack([t.numpy() for t in (p.top, p.left, p.height, p.width)], 1)
    assert (got == ref).all() and got[0].tolist() == [0, 43, 10, 13]


def test_flip_rate_and_determinism():
    p = ours(N, SIDE, SIDE, seed=3)
    assert abs(p.flip.double().mean().item() - 0.5) < 0.015
    q = ours(N, SIDE, SIDE, seed=3)
    assert torch.equal(p.top, q.top) and torch.equal(p.width, q.width) and torch.equal(p.flip, q.flip)
    r = ours(N, SIDE, SIDE, seed=4)
    assert not torch.equal(p.top, r.top)


def _padded_reference_crop(img: torch.Tensor, p: CropParams, i: int, pad: int = 4) -> torch.Tensor:
    padded = F.pad(img[i], (pad, pad, pad, pad))
    t, l, h, w = (int(v[i]) for v in (p.top, p.left, p.height, p.width))
    out = padded[:, t : t + h, l : l + w]
    return out.flip(-1) if bool(p.flip[i]) else out


def test_crop_flip_is_exact_pad_crop_flip():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(16, 3, 32, 32, generator=g)
    p = sample_random_crop_params(16, 40, 40, 32, generator=g)
    out = crop_resize(img, p, 32, pad=4)
    for i in range(16):
        torch.testing.assert_close(out[i], _padded_reference_crop(img, p, i), atol=1e-5, rtol=0)


def test_resized_crop_geometry_matches_interpolate_inside_the_box():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(8, 3, 32, 32, generator=g)
    p = ours(8, SIDE, SIDE, seed=1)
    out = crop_resize(img, p, 32, pad=4)
    for i in range(8):
        crop = _padded_reference_crop(img, p, i)
        ref = F.interpolate(crop[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
        # Identical away from the border (at the border we read the real neighbours, not a clamp).
        torch.testing.assert_close(out[i, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=2e-3, rtol=0)


def test_identity_box_returns_the_image():
    img = torch.rand(2, 3, 32, 32)
    full = torch.full((2,), 32)
    p = CropParams(torch.full((2,), 4), torch.full((2,), 4), full, full, torch.tensor([False, True]))
    out = crop_resize(img, p, 32, pad=4)
    torch.testing.assert_close(out[0], img[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], img[1].flip(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["reference", "crop_flip", "shift"])
def test_device_augment_output(mode):
    mean, std = (0.5071, 0.4866, 0.4409), (0.2009, 0.1984, 0.2023)
    aug = DeviceAugment(mode=mode, size=32, mean=mean, std=std, device="cpu")
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = aug(images, torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    # A flat image equal to the mean normalises to ~0 in test mode.
    flat = (torch.tensor(mean).view(1, 3, 1, 1) * 255).round().to(torch.uint8).expand(2, 3, 32, 32)
    assert aug.eval(flat).abs().max() < 0.02
    ev = aug.eval(images)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(ev, expected)
    # Training images are changed (crops/flips), padding shows up as the normalised black value.
    assert not torch.allclose(out, ev)


def test_shift_moves_by_at_most_one_pixel_and_never_flips():
    """digits' augmentation: each output is the image shifted by (dy, dx) in {-1, 0, 1}^2 with
    zero fill (exact up to the bilinear sampler's rounding), never mirrored."""
    aug = DeviceAugment(mode="shift", size=8, mean=(0.0,), std=(1.0,), device="cpu")
    images = torch.randint(1, 256, (200, 1, 8, 8), dtype=torch.uint8)
    out = aug(images, torch.Generator().manual_seed(0))
    x = images.float() / 255
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    shifts = set()
    for i in range(len(images)):
        match = [(dy, dx) for dy in range(3) for dx in range(3)
                 if torch.allclose(out[i], padded[i, :, dy : dy + 8, dx : dx + 8], atol=1e-5)]
        assert len(match) == 1, i
        shifts.add(match[0])
    assert len(shifts) == 9  # every shift occurs


def test_device_augment_grey_and_resize():
    aug = DeviceAugment(mode="reference", size=16, mean=(0.3,), std=(0.4,), device="cpu")
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    assert aug(images, torch.Generator().manual_seed(0)).shape == (5, 1, 16, 16)
    assert aug.eval(images).shape == (5, 1, 16, 16)


def test_pil_transforms_shapes():
    from PIL import Image

    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8))
    for augment in ("reference", "crop_flip", "shift"):
        assert pil_train_transform("cifar", 32, (0.5,) * 3, (0.2,) * 3, augment)(img).shape == (3, 32, 32)
    test = pil_test_transform("cifar", 32, (0.5,) * 3, (0.2,) * 3)(img)
    expected = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 - 0.5) / 0.2
    torch.testing.assert_close(test, expected)
    big = Image.fromarray(np.zeros((300, 400, 3), dtype=np.uint8))
    assert pil_train_transform("imagenet", 224, (0.5,) * 3, (0.2,) * 3, resize=224)(big).shape == (3, 224, 224)
    assert pil_test_transform("imagenet", 224, (0.5,) * 3, (0.2,) * 3)(big).shape == (3, 224, 224)
    names = [type(t).__name__ for t in pil_train_transform("cifar", 32, (0.5,) * 3, (0.2,) * 3).transforms]
    assert names[:2] == ["Pad", "RandomResizedCrop"]

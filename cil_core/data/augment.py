"""Training augmentation: batched on the device for tensor-resident data, PIL for files.

The reference code (METHOD.md, section 1) trains CIFAR with ``Pad(4)`` followed by a
*random-resized* crop back to 32 and a horizontal flip. Done per image in PIL that costs a
DataLoader and host work per batch; here the same distribution is sampled for the whole
batch at once (torchvision's ``RandomResizedCrop.get_params`` algorithm, vectorised: 10
attempts per image, then the centre-crop fallback) and applied with one ``grid_sample``,
so a CIFAR epoch never leaves the device (the airbench pattern).

Differences from PIL that are on purpose: the resize is plain bilinear (``grid_sample``),
without PIL's antialiasing when a crop larger than the output is shrunk (at most 40 -> 32
here); zero padding is implicit (samples outside the image read 0, exactly as on a
zero-padded canvas).

``shift`` (small grey images such as digits' 8x8): a random shift of up to one pixel (pad 1,
random crop), no flip -- a digit's mirror image is not the same digit, and a 4-pixel pad or a
crop down to 8% of the area leaves little of an 8x8 image.

``pil_train_transform`` / ``pil_test_transform`` build the equivalent torchvision
pipelines for the DataLoader path (image files, or any set with ``pipeline=loader``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

AUGMENTS = ("reference", "crop_flip", "shift")
SHIFT_PAD = 1
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
PAD = 4
ATTEMPTS = 10


@dataclass
class CropParams:
    """Per-image crop boxes in the (padded) input's pixel coordinates, plus flips."""

    top: torch.Tensor  # int64 (B,)
    left: torch.Tensor  # int64 (B,)
    height: torch.Tensor  # int64 (B,)
    width: torch.Tensor  # int64 (B,)
    flip: torch.Tensor  # bool (B,)


def _float_dtype(device: torch.device) -> torch.dtype:
    # torchvision does this arithmetic in double precision; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def sample_resized_crop_params(
    n: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    scale: Sequence[float] = SCALE,
    ratio: Sequence[float] = RATIO,
    flip_p: float = 0.5,
) -> CropParams:
    """``n`` draws of ``RandomResizedCrop.get_params`` (plus a flip), vectorised.

    Same algorithm as torchvision: up to 10 attempts of (area fraction ~ U(scale),
    log aspect ~ U(log ratio)), ``w = round(sqrt(A * r))``, ``h = round(sqrt(A / r))``; the
    first attempt that fits wins and its offsets are uniform integers; if none fits, the
    centre crop with the aspect ratio clamped to ``ratio``. All random numbers come from
    ``generator`` (on ``device``), so a batch costs a handful of kernels and no host sync.
    """
    device = torch.device(device) if device is not None else generator.device
    dtype = _float_dtype(device)
    area = float(height * width)
    u = torch.rand(n, ATTEMPTS, 4, generator=generator, device=device, dtype=dtype)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(dtype), dim=1, keepdim=True)  # first True (0 if none)
    any_ok = ok.any(dim=1)
    w_sel = torch.gather(w, 1, first).squeeze(1)
    h_sel = torch.gather(h, 1, first).squeeze(1)
    u_top = torch.gather(u[..., 2], 1, first).squeeze(1)
    u_left = torch.gather(u[..., 3], 1, first).squeeze(1)
    top = torch.minimum(torch.floor(u_top * (height - h_sel + 1)), height - h_sel)
    left = torch.minimum(torch.floor(u_left * (width - w_sel + 1)), width - w_sel)

    # Fallback: torchvision's central crop (whole image when its ratio is within range).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    fallback = ~any_ok
    w_sel = torch.where(fallback, torch.full_like(w_sel, fw), w_sel)
    h_sel = torch.where(fallback, torch.full_like(h_sel, fh), h_sel)
    top = torch.where(fallback, torch.full_like(top, (height - fh) // 2), top)
    left = torch.where(fallback, torch.full_like(left, (width - fw) // 2), left)
    flip = torch.rand(n, generator=generator, device=device) < flip_p
    return CropParams(top.long(), left.long(), h_sel.long(), w_sel.long(), flip)


def sample_random_crop_params(
    n: int, height: int, width: int, size: int, *, generator: torch.Generator, device: torch.device | str | None = None, flip_p: float = 0.5
) -> CropParams:
    """``n`` draws of ``RandomCrop(size)`` offsets on a ``height x width`` canvas, plus flips."""
    device = torch.device(device) if device is not None else generator.device
    top = torch.randint(0, height - size + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, width - size + 1, (n,), generator=generator, device=device)
    full = torch.full((n,), size, dtype=torch.long, device=device)
    flip = torch.rand(n, generator=generator, device=device) < flip_p
    return CropParams(top, left, full, full.clone(), flip)


def crop_resize(images: torch.Tensor, params: CropParams, size: int, pad: int = 0) -> torch.Tensor:
    """Crop each image to its box and resize it to ``size x size`` (bilinear), flipping as asked.

    ``images`` (float, B x C x H x W) are *unpadded*; boxes are in the coordinates of the
    image zero-padded by ``pad`` on every side, so the padding is never materialised:
    ``grid_sample`` reads zeros outside the image, as the padded canvas would hold.
    """
    b, _, h_in, w_in = images.shape
    dtype = images.dtype
    w = params.width.to(dtype)
    h = params.height.to(dtype)
    left = (params.left - pad).to(dtype)
    top = (params.top - pad).to(dtype)
    # Output pixel k samples input x = left + (k + 0.5) * w / size - 0.5 (align_corners=False).
    sx = w / w_in
    sy = h / h_in
    tx = (2.0 * left + w) / w_in - 1.0
    ty = (2.0 * top + h) / h_in - 1.0
    sx = torch.where(params.flip, -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DeviceAugment:
    """Batched augmentation + normalisation of uint8 images already on their device.

    ``mode``: ``reference`` (pad 4, random-resized crop to ``size``, flip: the reference
    code's CIFAR recipe), ``crop_flip`` (pad 4, random ``size`` crop, flip: the usual one) or
    ``shift`` (pad 1, random ``size`` crop, no flip: small grey images).
    """

    def __init__(
        self,
        *,
        mode: str,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        pad: int = PAD,
    ) -> None:
        if mode not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {mode!r}")
        self.mode = mode
        self.size = int(size)
        self.pad = SHIFT_PAD if mode == "shift" else int(pad)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(torch.float32).div_(255.0)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return images.sub_(self.mean).div_(self.std)

    def sample(self, n: int, height: int, width: int, generator: torch.Generator) -> CropParams:
        """The crop boxes and flips one call of :meth:`__call__` would apply."""
        ph, pw = height + 2 * self.pad, width + 2 * self.pad
        if self.mode == "reference":
            return sample_resized_crop_params(n, ph, pw, generator=generator, device=self.device)
        flip_p = 0.0 if self.mode == "shift" else 0.5
        return sample_random_crop_params(n, ph, pw, self.size, generator=generator, device=self.device, flip_p=flip_p)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (B, C, H, W) -> augmented, normalised float32 (B, C, size, size)."""
        params = self.sample(images.shape[0], images.shape[2], images.shape[3], generator)
        out = crop_resize(self._to_float(images), params, self.size, self.pad)
        return self._normalise(out)

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised float32, no augmentation (resized only if not ``size``)."""
        x = self._to_float(images)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self._normalise(x)


def pil_train_transform(
    family: str,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: str = "reference",
    resize: int | None = None,
) -> Callable[[Any], torch.Tensor]:
    """The torchvision (PIL) training pipeline equivalent to the reference code's.

    ``cifar``: Pad(4) + RandomResizedCrop(size) + flip (``crop_flip``: RandomCrop(size,
    padding=4) + flip). ``imagenet``: [Resize(resize)] + RandomResizedCrop(size) + flip
    (``crop_flip``: Resize(resize or 256/224 * size) + RandomCrop(size) + flip); the reference
    resizes Food-101 and ImageNet-1k to 224 first (``resize=224``), not ImageNet-Subset.
    """
    from torchvision import transforms as T

    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    steps: list = []
    if family == "cifar":
        if resize is not None:
            steps.append(T.Resize(resize))
        if augment == "reference":
            steps += [T.Pad(PAD), T.RandomResizedCrop(size)]
        elif augment == "shift":
            steps.append(T.RandomCrop(size, padding=SHIFT_PAD))
        else:
            steps.append(T.RandomCrop(size, padding=PAD))
    elif family == "imagenet":
        if augment == "reference":
            if resize is not None:
                steps.append(T.Resize(resize))
            steps.append(T.RandomResizedCrop(size))
        else:
            steps += [T.Resize(resize or _imagenet_resize(size)), T.RandomCrop(size)]
    else:
        raise ValueError(f"unknown augment family {family!r}; use 'cifar' or 'imagenet'")
    if augment != "shift":
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def pil_test_transform(
    family: str, size: int, mean: Sequence[float], std: Sequence[float], resize: int | None = None
) -> Callable[[Any], torch.Tensor]:
    """The test pipeline: CIFAR the image as is; ImageNet-like Resize + CentreCrop(size).

    ImageNet-Subset's reference lists hold images already resized to 256 and centre-crop 224;
    ``Resize(256)`` reproduces that from original files (a no-op on 256 images). Food-101 and
    ImageNet-1k use ``resize=224`` as the reference does.
    """
    from torchvision import transforms as T

    if family == "cifar":
        steps: list = [T.Resize(resize), T.CenterCrop(size)] if resize is not None else []
    elif family == "imagenet":
        steps = [T.Resize(resize or _imagenet_resize(size)), T.CenterCrop(size)]
    else:
        raise ValueError(f"unknown augment family {family!r}; use 'cifar' or 'imagenet'")
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def _imagenet_resize(size: int) -> int:
    return int(round(size * 256 / 224))

"""Reading and checking image lists (``train.txt`` / ``test.txt``: one ``path label`` a line).

Every problem a user can fix is a :class:`DataError` whose one line names the file (and line
number) or the image, and says what to do, so a run never starts on a list it would crash
on hours later.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:  # imported where images are decoded: reading a list needs no torch
    import torch

log = logging.getLogger(__name__)

# Up to this many files every header is checked (PIL ``verify``: cheap, I/O bound); above
# it (ImageNet-1k's 1.28M) only a sample, so start-up stays in seconds.
FULL_VERIFY_LIMIT = 200_000
DECODE_SAMPLE = 32
# A training list whose largest class holds at least this many times the images of its
# smallest is long-tailed already (Food-101-LT, tinyimagenet100_lt) and is not thinned again.
LONG_TAIL_RATIO = 10.0


def _threads() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:
        return max(1, min(8, os.cpu_count() or 1))


def read_image_list(list_file: Path, num_classes: int | None = None) -> tuple[list[str], np.ndarray]:
    """Absolute paths and labels of one list; relative paths are relative to its folder.

    Blank lines are skipped. A line without a label, a label that is not an integer, or a
    label outside ``0..num_classes-1`` is a :class:`DataError` naming the file and line.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"{list_file} does not exist; an image-list data set needs train.txt and test.txt there")
    base = list_file.parent.resolve()
    paths: list[str] = []
    labels: list[int] = []
    with open(list_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2:
                raise DataError(f"{list_file}:{number}: expected 'path label', got {text!r}; add the class label after the path")
            path, label_text = parts
            try:
                label = int(label_text)
            except ValueError:
                raise DataError(
                    f"{list_file}:{number}: the label {label_text!r} is not an integer; each line must be 'path label'"
                ) from None
            if label < 0 or (num_classes is not None and label >= num_classes):
                hint = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
                raise DataError(f"{list_file}:{number}: label {label} is out of range (expected {hint}); fix the list")
            paths.append(path if os.path.isabs(path) else os.path.join(base, path))
            labels.append(label)
    if not labels:
        raise DataError(f"{list_file} lists no images; write one 'path label' pair a line")
    return paths, np.asarray(labels, dtype=np.int64)


def check_files_exist(paths: Sequence[str], list_file: Path) -> None:
    """Every listed file exists (one ``stat`` each, threaded)."""
    with ThreadPoolExecutor(_threads()) as pool:
        exists = list(pool.map(os.path.isfile, paths, chunksize=256))
    missing = [p for p, ok in zip(paths, exists) if not ok]
    if missing:
        raise DataError(
            f"{list_file}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]}; fix the paths or re-run prepare"
        )


def _verify_one(path: str) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types for a bad file
        return f"{type(exc).__name__}: {exc}"
    return None


def _decode_one(path: str) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.convert("RGB").load()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def verify_images(paths: Sequence[str], *, decode_sample: int = DECODE_SAMPLE, seed: int = 0) -> None:
    """Raise :class:`DataError` naming the first image PIL cannot read.

    Checks every header (``Image.verify``, threaded) for lists up to ``FULL_VERIFY_LIMIT``
    files and a seeded sample above it, then fully decodes ``decode_sample`` random images
    (``verify`` does not decode pixels, so this catches truncated files in the sample).
    """
    paths = list(paths)
    rng = np.random.RandomState(seed)
    if len(paths) <= FULL_VERIFY_LIMIT:
        check = paths
    else:
        check = [paths[i] for i in rng.choice(len(paths), FULL_VERIFY_LIMIT // 10, replace=False)]
        log.info("verifying %d of %d image headers (a seeded sample)", len(check), len(paths))
    sample = [paths[i] for i in rng.choice(len(paths), min(decode_sample, len(paths)), replace=False)]
    with ThreadPoolExecutor(_threads()) as pool:
        for fn, group in ((_verify_one, check), (_decode_one, sample)):
            for path, problem in zip(group, pool.map(fn, group, chunksize=64)):
                if problem is not None:
                    raise DataError(f"cannot decode image {path} ({problem}); replace or remove it from the list")


def _decode_resized(path: str, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (size, size):
                # PIL's bilinear resize is antialiased when shrinking (64 -> 32 here).
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:
        raise DataError(f"cannot decode image {path} ({type(exc).__name__}: {exc}); replace or remove it from the list") from None


def decode_images(paths: Sequence[str], size: int) -> "torch.Tensor":
    """Decode every image once into a uint8 ``N x 3 x size x size`` tensor.

    For small sets (tinyimagenet100_lt) this makes them tensor-resident, so training
    augments on the device like CIFAR and never touches a file again. Serial on purpose:
    for 64x64 JPEGs the per-image Python overhead dominates and a thread pool measured
    slower (~0.2 ms per image serially, ~3 s for tinyimagenet100_lt's 15,847).
    """
    import torch

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = _decode_resized(path, size)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def is_long_tailed(labels: np.ndarray, num_classes: int | None = None) -> bool:
    """True when the largest class has >= ``LONG_TAIL_RATIO`` times the smallest's images."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes or 0)
    counts = counts[counts > 0]
    return bool(len(counts) > 1 and counts.max() / counts.min() >= LONG_TAIL_RATIO)


def channel_stats(images: "torch.Tensor") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (of pixel values in [0, 1]) of a uint8 N x C x H x W tensor."""
    import torch

    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):  # a 256-bin histogram per channel: exact, no float copy
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / (n - 1)
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)

"""``python -m cil_core prepare DATASET --src DIR --data-root DIR``: write the image lists.

The paper's image-list data sets are read from ``train.txt`` / ``test.txt`` (``path label`` a
line); this writes them, with absolute paths, from the user's own copy of the images, so no
image is copied or converted. CIFAR-100 is downloaded by torchvision instead.

- ``Food101``: the official split, ``meta/train.txt`` / ``meta/test.txt`` (``class/id`` lines
  -> ``images/class/id.jpg``), labels = line numbers of ``meta/classes.txt``.
- ``imagenet_1000``: ``train/<wnid>/*`` and ``val/<wnid>/*``; labels = sorted wnid index.
- ``imagenet_subset``: the LT-CIL / PODNet convention: of the 1000 sorted wnids, the 100
  chosen by ``np.random.seed(1993); np.random.choice(1000, 100, replace=False)``, and class
  ``k`` is the ``k``-th chosen wnid (the reference's ``subset.py`` and its lists).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
SUBSET_SEED = 1993
SUBSET_CLASSES = 100
_NAMES = {"cifar100": "cifar100", "food101": "Food101", "imagenet_subset": "imagenet_subset", "imagenet_1000": "imagenet_1000"}


def prepare(dataset: str, src: str | Path | None, dest: str | Path, seed: int = SUBSET_SEED) -> str:
    """Write ``dest/train.txt`` and ``dest/test.txt`` (or download CIFAR-100); return a summary line."""
    name = _NAMES.get(dataset.lower())
    if name is None:
        raise DataError(f"prepare knows {', '.join(sorted(_NAMES.values()))}; got {dataset!r}")
    dest = Path(dest).expanduser().resolve()
    if name == "cifar100":
        return _prepare_cifar100(dest)
    if src is None:
        raise DataError(f"prepare {name} needs --src: the folder holding your copy of the images")
    src = Path(src).expanduser().resolve()
    if not src.is_dir():
        raise DataError(f"--src {src} does not exist; pass the folder holding your copy of {name}")
    if name == "Food101":
        train, test, classes = _food101_lists(src)
    else:
        train, test, classes = _imagenet_lists(src, subset=SUBSET_CLASSES if name == "imagenet_subset" else None, seed=seed)
    dest.mkdir(parents=True, exist_ok=True)
    _write_list(dest / "train.txt", train)
    _write_list(dest / "test.txt", test)
    (dest / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes)), encoding="utf-8")
    return f"{name}: wrote {len(train)} training and {len(test)} test images of {len(classes)} classes to {dest}"


def _prepare_cifar100(dest: Path) -> str:
    from torchvision.datasets import CIFAR100

    try:
        for train in (True, False):
            CIFAR100(str(dest), train=train, download=True)
    except Exception as exc:
        raise DataError(
            f"could not download CIFAR-100 into {dest} ({type(exc).__name__}: {exc}); on a machine without internet, "
            "copy torchvision's cifar-100-python/ folder (from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz) there"
        ) from None
    return f"cifar100: ready in {dest}"


def _write_list(path: Path, rows: list[tuple[str, int]]) -> None:
    path.write_text("".join(f"{p} {label}\n" for p, label in rows), encoding="utf-8")


def _food101_lists(src: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    meta = src / "meta"
    for f in ("classes.txt", "train.txt", "test.txt"):
        if not (meta / f).is_file():
            raise DataError(
                f"{meta / f} is missing; --src must be the unpacked food-101/ folder (with meta/ and images/)"
            )
    classes = [c.strip() for c in (meta / "classes.txt").read_text(encoding="utf-8").splitlines() if c.strip()]
    index = {c: i for i, c in enumerate(classes)}

    def rows(list_file: Path) -> list[tuple[str, int]]:
        out = []
        for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
            item = line.strip()
            if not item:
                continue
            cls = item.split("/", 1)[0]
            if cls not in index:
                raise DataError(f"{list_file}:{number}: class {cls!r} is not in {meta / 'classes.txt'}")
            out.append((str(src / "images" / f"{item}.jpg"), index[cls]))
        return out

    train, test = rows(meta / "train.txt"), rows(meta / "test.txt")
    missing = [p for p, _ in train[:1] + test[:1] if not Path(p).is_file()]
    if missing:
        raise DataError(f"{missing[0]} does not exist; --src must hold images/<class>/<id>.jpg")
    return train, test, classes


def _class_dirs(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; --src must hold train/<wnid>/ and val/<wnid>/ folders")
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def _images_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def subset_wnids(all_wnids: list[str], *, k: int = SUBSET_CLASSES, seed: int = SUBSET_SEED) -> list[str]:
    """The ImageNet-Subset's classes in label order: ``RandomState(seed).choice(1000, 100)``.

    ``RandomState(1993)`` draws exactly what ``np.random.seed(1993); np.random.choice`` does,
    so label 0 is n01729322 and label 1 n01514668, as in the LT-CIL reference lists.
    """
    chosen = np.random.RandomState(seed).choice(len(all_wnids), k, replace=False)
    return [all_wnids[i] for i in chosen]


def _imagenet_lists(
    src: Path, *, subset: int | None, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    wnids = _class_dirs(src / "train")
    val_wnids = set(_class_dirs(src / "val"))
    if subset is not None:
        if len(wnids) != 1000:
            raise DataError(
                f"{src / 'train'} has {len(wnids)} class folders; the ImageNet-Subset is chosen from all 1000 "
                "(the seed-1993 choice needs the full sorted list)"
            )
        wnids = subset_wnids(wnids, k=subset, seed=seed)
    absent = [w for w in wnids if w not in val_wnids]
    if absent:
        raise DataError(
            f"{src / 'val'} has no folder {absent[0]} ({len(absent)} missing); sort the validation images into "
            "val/<wnid>/ folders (e.g. with the usual valprep.sh) and run prepare again"
        )
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for label, wnid in enumerate(wnids):
        train += [(p, label) for p in _images_in(src / "train" / wnid)]
        test += [(p, label) for p in _images_in(src / "val" / wnid)]
    return train, test, wnids

"""prepare: image lists from tiny fake Food-101 / ImageNet trees (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cil_core.data.prepare import prepare, subset_wnids
from cil_core.errors import DataError


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def read_list(path: Path) -> list[tuple[str, int]]:
    return [(p, int(label)) for p, label in (line.rsplit(" ", 1) for line in path.read_text().splitlines())]


def test_food101_lists(tmp_path):
    src = tmp_path / "food-101"
    (src / "meta").mkdir(parents=True)
    (src / "meta" / "classes.txt").write_text("apple_pie\nbaby_back_ribs\n")
    (src / "meta" / "train.txt").write_text("apple_pie/1005649\nbaby_back_ribs/7\napple_pie/3\n")
    (src / "meta" / "test.txt").write_text("baby_back_ribs/9\n")
    for item in ("apple_pie/1005649", "baby_back_ribs/7", "apple_pie/3", "baby_back_ribs/9"):
        touch(src / "images" / f"{item}.jpg")
    summary = prepare("food101", src, tmp_path / "out")
    assert "3 training and 1 test images of 2 classes" in summary
    train = read_list(tmp_path / "out" / "train.txt")
    assert train[0] == (str((src / "images" / "apple_pie" / "1005649.jpg").resolve()), 0)
    assert [label for _, label in train] == [0, 1, 0]
    assert read_list(tmp_path / "out" / "test.txt") == [(str((src / "images/baby_back_ribs/9.jpg").resolve()), 1)]
    assert (tmp_path / "out" / "classes.txt").read_text().splitlines()[1] == "1 baby_back_ribs"


def test_food101_errors(tmp_path):
    with pytest.raises(DataError, match="meta"):
        prepare("Food101", tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match="--src"):
        prepare("Food101", None, tmp_path / "out")
    with pytest.raises(DataError, match="prepare knows"):
        prepare("mnist", tmp_path, tmp_path / "out")


def make_imagenet(root: Path, wnids: list[str], per_class: int = 2) -> None:
    for wnid in wnids:
        for split in ("train", "val"):
            for i in range(per_class):
                touch(root / split / wnid / f"{wnid}_{i}.JPEG")
        touch(root / "train" / wnid / "notes.txt")  # not an image: ignored


def test_imagenet_1000_lists_use_sorted_wnids(tmp_path):
    make_imagenet(tmp_path / "in", ["n03", "n01", "n02"])
    prepare("imagenet_1000", tmp_path / "in", tmp_path / "out")
    train = read_list(tmp_path / "out" / "train.txt")
    assert len(train) == 6 and all(Path(p).is_absolute() for p, _ in train)
    assert [(Path(p).parent.name, label) for p, label in train[::2]] == [("n01", 0), ("n02", 1), ("n03", 2)]
    assert len(read_list(tmp_path / "out" / "test.txt")) == 6


def test_imagenet_subset_is_the_seed_1993_choice(tmp_path):
    wnids = [f"n{i:08d}" for i in range(1000)]
    make_imagenet(tmp_path / "in", wnids, per_class=1)
    prepare("imagenet_subset", tmp_path / "in", tmp_path / "out")
    test = read_list(tmp_path / "out" / "test.txt")
    assert len(test) == 100
    chosen = np.random.RandomState(1993).choice(1000, 100, replace=False)
    # The LT-CIL reference list: label 0 is sorted wnid #54 (n01729322), label 1 #7 (n01514668).
    assert chosen[:2].tolist() == [54, 7]
    assert [Path(p).parent.name for p, _ in test[:2]] == [wnids[54], wnids[7]]
    assert [label for _, label in test] == list(range(100))
    assert subset_wnids(wnids) == [wnids[i] for i in chosen]


def test_imagenet_errors(tmp_path):
    make_imagenet(tmp_path / "in", ["n01", "n02"])
    with pytest.raises(DataError, match="1000"):
        prepare("imagenet_subset", tmp_path / "in", tmp_path / "out")
    for f in (tmp_path / "in" / "val" / "n02").iterdir():
        f.unlink()
    (tmp_path / "in" / "val" / "n02").rmdir()
    with pytest.raises(DataError, match="val/<wnid>"):
        prepare("imagenet_1000", tmp_path / "in", tmp_path / "out")


def test_cifar100_download_failure_names_folder(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, train=True, download=False):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError) as err:
        prepare("cifar100", None, tmp_path / "c100")
    assert str((tmp_path / "c100").resolve()) in str(err.value) and "cifar-100-python" in str(err.value)

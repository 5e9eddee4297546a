"""Data set specs: shapes and counts, and one-line DataErrors that name the file and the fix."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cil_core.config import RunConfig
from cil_core.data import datasets as D
from cil_core.data.imagelist import is_long_tailed, read_image_list, verify_images
from cil_core.data.scenarios import build_scenario
from cil_core.errors import DataError
from cil_core.registry import get_dataset

TINY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyimagenet100_lt"


def config(dataset: str, root: Path | str | None = None, **kw) -> RunConfig:
    return RunConfig(dataset=dataset, approach="finetune", scenario="lt", initial_classes=2, total_tasks=2,
                     data_root=str(root) if root is not None else None, **kw)


def write_list_folder(root: Path, counts: list[int], test_per_class: int = 2, size: int = 12) -> Path:
    """A tiny image-list data set: PNGs under root/img, relative paths in train.txt/test.txt."""
    (root / "img").mkdir(parents=True)
    rng = np.random.RandomState(0)
    for split, per_class in (("train", counts), ("test", [test_per_class] * len(counts))):
        lines = []
        for label, n in enumerate(per_class):
            for i in range(n):
                name = f"img/{split}_{label}_{i}.png"
                colour = rng.randint(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(colour).save(root / name)
                lines.append(f"{name} {label}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    return root


# ------------------------------------------------------------------ bundled sets


def test_registry_has_every_data_set():
    for name in ("cifar100", "imagenet_subset", "imagenet_1000", "Food101", "imagelist",
                 "tinyimagenet100_lt", "digits", "synthetic"):
        spec = get_dataset(name)
        assert spec.name == name and spec.protocol.epochs > 0
    assert get_dataset("food101").name == "Food101"
    assert get_dataset("cifar100").protocol.lr_milestones == (80, 120)
    assert get_dataset("imagenet_subset").protocol.backbone == "resnet18"
    assert get_dataset("imagenet_subset").root(config("imagenet_subset")) == Path("data/imagenet_subset")
    if Path("../shared/data/tinyimagenet100_lt").is_dir():  # the default, relative to the project root
        assert get_dataset("tinyimagenet100_lt").root(config("tinyimagenet100_lt")).resolve() == TINY.resolve()


def test_digits_loads_with_fixed_split():
    ds = get_dataset("digits").load(config("digits"))
    assert ds.train.images.shape == (1258, 1, 8, 8) and ds.test.images.shape == (539, 1, 8, 8)
    assert ds.train.images.dtype == torch.uint8 and int(ds.train.images.max()) == 255
    counts = np.bincount(ds.train.labels)
    assert len(counts) == 10 and ds.n_max == counts.min()
    again = get_dataset("digits").load(config("digits"))
    assert torch.equal(ds.train.images, again.train.images)
    # Each class is split 70/30 independently.
    totals = np.bincount(np.concatenate([ds.train.labels, ds.test.labels]))
    assert np.all(np.abs(counts - np.round(0.7 * totals)) <= 0)
    assert len(ds.mean) == 1 and 0.1 < ds.mean[0] < 0.6


def test_synthetic_loads_and_is_separable():
    ds = get_dataset("synthetic").load(config("synthetic"))
    assert ds.train.images.shape == (1200, 3, 16, 16) and ds.test.images.shape == (400, 3, 16, 16)
    assert np.bincount(ds.train.labels).tolist() == [60] * 20
    # Nearest class mean on raw pixels already separates the classes well: learnable fast.
    x = ds.train.images.float().flatten(1)
    means = torch.stack([x[torch.from_numpy(ds.train.labels == c)].mean(0) for c in range(20)])
    pred = torch.cdist(ds.test.images.float().flatten(1), means).argmin(1).numpy()
    assert (pred == ds.test.labels).mean() > 0.9


def test_synthetic_scenario_end_to_end():
    ds = get_dataset("synthetic").load(config("synthetic"))
    s = build_scenario(ds.train.labels, ds.test.labels, 20, scenario="lt", initial_classes=10, total_tasks=2,
                       n_max=ds.n_max, profile_rule=get_dataset("synthetic").profile_rule)
    # The profile's tail would floor to int(60 * 0.01) = 0: every class keeps at least one image.
    assert s.counts_before_val[s.label_map[0]] == 60 and s.counts_before_val.min() == 1


# ------------------------------------------------------------------ image lists


def test_imagelist_loads_relative_paths(tmp_path):
    root = write_list_folder(tmp_path / "set", [6, 5, 4])
    ds = get_dataset("imagelist").load(config("imagelist", root))
    assert ds.num_classes == 3 and ds.train.images.shape == (15, 3, 32, 32)
    assert ds.test.images.shape == (6, 3, 32, 32) and not ds.already_long_tailed
    bound = get_dataset("imagelist").bind(config("imagelist", root))
    assert bound.num_classes == 3 and get_dataset("imagelist").num_classes == 0


def test_imagelist_detects_long_tail(tmp_path):
    root = write_list_folder(tmp_path / "lt", [20, 5, 2])
    ds = get_dataset("imagelist").load(config("imagelist", root))
    assert ds.already_long_tailed and ds.n_max == 20
    assert is_long_tailed(np.repeat([0, 1], [10, 1])) and not is_long_tailed(np.repeat([0, 1], [9, 1]))


def test_missing_folder_names_folder_and_fix(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(DataError) as err:
        get_dataset("imagenet_subset").load(config("imagenet_subset", missing))
    assert str(missing) in str(err.value) and "python -m cil_core prepare imagenet_subset" in str(err.value)
    with pytest.raises(DataError, match="Food-101"):
        get_dataset("Food101").load(config("Food101", missing))
    with pytest.raises(DataError, match="train.txt"):
        get_dataset("imagelist").load(config("imagelist", missing))


def test_missing_test_list(tmp_path):
    root = write_list_folder(tmp_path / "set", [2, 2])
    (root / "test.txt").unlink()
    with pytest.raises(DataError, match="test.txt"):
        get_dataset("imagelist").load(config("imagelist", root))


def test_line_without_label(tmp_path):
    root = write_list_folder(tmp_path / "set", [2, 2])
    with open(root / "train.txt", "a") as f:
        f.write("img/train_0_0.png\n")
    with pytest.raises(DataError) as err:
        get_dataset("imagelist").load(config("imagelist", root))
    assert f"{root / 'train.txt'}:5" in str(err.value) and "label" in str(err.value)


def test_label_out_of_range(tmp_path):
    root = write_list_folder(tmp_path / "set", [2, 2])
    text = (root / "test.txt").read_text().replace("img/test_1_1.png 1", "img/test_1_1.png 7")
    (root / "test.txt").write_text(text)
    with pytest.raises(DataError) as err:
        get_dataset("imagelist").load(config("imagelist", root))
    assert f"{root / 'test.txt'}:4" in str(err.value) and "7" in str(err.value)
    with pytest.raises(DataError, match=r"train.txt:1: label 100 is out of range \(expected 0..99\)"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "train.txt").write_text("a.png 100\n")
        read_image_list(tmp_path / "x" / "train.txt", 100)
    with pytest.raises(DataError, match="not an integer"):
        (tmp_path / "x" / "train.txt").write_text("a.png cat\n")
        read_image_list(tmp_path / "x" / "train.txt")


def test_undecodable_image_in_tensor_set(tmp_path):
    root = write_list_folder(tmp_path / "set", [3, 3])
    bad = root / "img" / "train_1_2.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError) as err:
        get_dataset("imagelist").load(config("imagelist", root))
    assert str(bad) in str(err.value)


def test_path_based_set_checks_files(tmp_path):
    # Food-101 layout with 101 labels would be large; labels 0..1 are valid for it too.
    root = write_list_folder(tmp_path / "food", [3, 3], size=8)
    ds = get_dataset("Food101").load(config("Food101", root))
    assert ds.train.paths is not None and ds.train.images is None and len(ds.train.paths) == 6
    assert all(Path(p).is_absolute() for p in ds.train.paths) and ds.resize == 224
    bad = root / "img" / "test_0_1.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as err:
        get_dataset("Food101").load(config("Food101", root))
    assert str(bad) in str(err.value)
    bad.unlink()
    with pytest.raises(DataError, match="do not exist"):
        get_dataset("Food101").load(config("Food101", root))


def test_verify_images_catches_truncated_file_in_sample(tmp_path):
    good = tmp_path / "a.jpg"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, quality=90)
    truncated = tmp_path / "b.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    verify_images([str(good)])
    with pytest.raises(DataError, match="b.jpg"):
        verify_images([str(good), str(truncated)])


def test_cifar100_missing_offline_says_how_to_fetch(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Dataset not found") if not download else OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    with pytest.raises(DataError) as err:
        get_dataset("cifar100").load(config("cifar100", tmp_path / "c100"))
    msg = str(err.value)
    assert str(tmp_path / "c100") in msg and "python -m cil_core prepare cifar100" in msg and "\n" not in msg


# ------------------------------------------------------------------ tinyimagenet100_lt


@pytest.mark.slow
@pytest.mark.skipif(not TINY.is_dir(), reason=f"{TINY} is absent (the shared development data is not checked in)")
def test_tinyimagenet100_lt_loads():
    D._DECODED.clear()
    started = time.perf_counter()
    ds = get_dataset("tinyimagenet100_lt").load(config("tinyimagenet100_lt", TINY))
    elapsed = time.perf_counter() - started
    assert ds.num_classes == 100 and ds.already_long_tailed
    assert ds.train.images.shape == (10847, 3, 32, 32) and ds.test.images.shape == (5000, 3, 32, 32)
    counts = np.bincount(ds.train.labels, minlength=100)
    assert counts[0] == 500 and counts[99] == 5 and counts.sum() == 10847
    assert np.bincount(ds.test.labels).tolist() == [50] * 100
    assert all(0.3 < m < 0.6 for m in ds.mean) and all(0.15 < s < 0.35 for s in ds.std)
    assert ds.class_names is not None and ds.class_names[0].startswith("n02124075")
    assert elapsed < 60
    # A second load in the same process reuses the decoded tensors.
    started = time.perf_counter()
    again = get_dataset("tinyimagenet100_lt").load(config("tinyimagenet100_lt", TINY))
    assert again.train.images is ds.train.images and time.perf_counter() - started < 2
    s = build_scenario(ds.train.labels, ds.test.labels, 100, scenario="ltio", initial_classes=20, total_tasks=5,
                       already_long_tailed=True, profile_rule="by_arrival")
    assert s.counts_before_val[0] == 500 and s.counts_before_val.sum() == 10847

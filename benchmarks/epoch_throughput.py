"""Training throughput of one CIFAR-100-LT-sized epoch, two comparisons (``--compare``):

* ``pipeline`` (default): tensor-resident pipeline vs DataLoader, same execution;
* ``precision``: fp32 (contiguous) vs bf16 autocast + channels-last, same tensor pipeline,
  each variant its own copy of the same initial model (the Learner's execution options,
  ``cil_core/engine/execution.py``; on the CPU this needs AVX-512 BF16 / AMX).

Same backbone (``--backbone``: ResNet-32 by default, 100 classes), same optimiser, same
training step (forward, cross-entropy, backward, SGD with momentum). The pipelines of
``cil_core/data/batches.py``:
  * ``tensor`` : :class:`TensorPipeline`: uint8 images resident on the device, the batch's
                 pad + random-resized crop + flip + normalise done on the device at once;
  * ``loader`` : :class:`LoaderPipeline`: a torch DataLoader over the same uint8 images as
                 PIL images with the torchvision transforms of ``augment.py``, persistent
                 workers sized to the CPUs (``default_workers()``), pinned memory on CUDA.
The two alternate epoch by epoch in one process (order rotated each round), so machine
noise hits both alike; medians over rounds are reported, and the last line is the median
over rounds of the per-round ratio of images per second.

The data: ``--data random`` (default) is random uint8 32x32 RGB images with the
CIFAR-100-LT training profile (500 ... 5 images per class, rho 100: 10,847 images; CIFAR-100
itself needs a download); ``--data tinyimagenet`` is tinyimagenet100_lt decoded at 32x32
(``--data-root``). Image content does not change either pipeline's cost.

A full epoch is 85 batches of 128. On a CPU that is minutes per epoch, so ``--batches N``
(default on CPU: 8) or ``--epochs-fraction F`` times a random N-batch slice of the epoch;
each timed "epoch" includes starting the pipeline's iterator (the loader's prefetch).
Before the training rounds, a data-only pass times each pipeline alone (no model).

    python benchmarks/epoch_throughput.py --device cpu --batches 8 --rounds 5
    python benchmarks/epoch_throughput.py --device cpu --compare precision --batches 4 --rounds 5
    python benchmarks/epoch_throughput.py --device cuda --epochs-fraction 1 --rounds 5 --threads 0
    python benchmarks/epoch_throughput.py --device cuda --compare precision --epochs-fraction 1 --rounds 3 --threads 0
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cil_core.registry import get_backbone
from cil_core.engine.execution import bf16_supported
from cil_core.config import RunConfig
from cil_core.data.batches import LoaderPipeline, TensorPipeline, default_workers
from cil_core.data.datasets import CIFAR_MEAN, CIFAR_PROTOCOL, CIFAR_STD
from cil_core.data.scenarios import long_tail_counts
from cil_core.data.contract import ImageSplit, LoadedDataset
from cil_core.engine.network import IncrementalNet, LinearHead

from _common import cpu_note, interleaved, median, paired_ratio, setup_threads, syncer


def random_cifar100_lt(seed: int = 0) -> LoadedDataset:
    """Random uint8 32x32 images, per-class counts of CIFAR-100-LT (rho 100): 10,847 images."""
    counts = long_tail_counts(500, 100, 100.0)
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(100), counts)
    train = torch.randint(0, 256, (len(labels), 3, 32, 32), generator=g, dtype=torch.uint8)
    test_labels = np.repeat(np.arange(100), 2)
    test = torch.randint(0, 256, (len(test_labels), 3, 32, 32), generator=g, dtype=torch.uint8)
    return LoadedDataset(
        name="random_cifar100_lt",
        num_classes=100,
        train=ImageSplit(labels=labels, images=train),
        test=ImageSplit(labels=test_labels, images=test),
        protocol=CIFAR_PROTOCOL,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        n_max=500,
        augment_family="cifar",
    )


def tinyimagenet(data_root: str | None) -> LoadedDataset:
    from cil_core.registry import get_dataset

    cfg = RunConfig(dataset="tinyimagenet100_lt", approach="finetune", scenario="lt", initial_classes=50,
                    total_tasks=6, data_root=data_root, image_size=32)
    return get_dataset("tinyimagenet100_lt").bind(cfg).load(cfg)


def digits() -> LoadedDataset:
    """scikit-learn's digits (8x8 grey, 10 classes): the ``digits`` protocol's data, for its convnet."""
    from cil_core.registry import get_dataset

    cfg = RunConfig(dataset="digits", approach="finetune", scenario="lt", initial_classes=4, total_tasks=4)
    return get_dataset("digits").bind(cfg).load(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", choices=("random", "tinyimagenet", "digits"), default="random")
    parser.add_argument("--data-root", default="/work/shared/data/tinyimagenet100_lt")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--batches", type=int, default=None, help="batches per timed epoch (default: 8 on CPU, the full epoch on CUDA)")
    size.add_argument("--epochs-fraction", type=float, default=None, help="fraction of the full epoch per timed epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup-batches", type=int, default=2, help="an untimed short epoch per pipeline first (starts the workers)")
    parser.add_argument("--data-only-batches", type=int, default=20, help="batches per pipeline in the data-only pass (0: skip)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cil_core's default_workers(), sized to the CPUs)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in the training process (0: torch's default)")
    parser.add_argument("--compare", choices=("pipeline", "precision"), default="pipeline",
                        help="pipeline: tensor vs loader; precision: fp32 vs bf16 autocast + channels-last (tensor pipeline)")
    parser.add_argument("--backbone", choices=("resnet32", "resnet8", "convnet"), default="resnet32",
                        help="convnet: the digits protocol's (use with --data digits --batch-size 32)")
    parser.add_argument("--amp", action="store_true", help="pipeline comparison: both under bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="pipeline comparison: both channels-last")
    args = parser.parse_args()

    device = torch.device(args.device)
    threads = setup_threads(device, args.threads)
    sync = syncer(device)
    dataset = {"random": random_cifar100_lt, "digits": digits}.get(args.data, lambda: tinyimagenet(args.data_root))()
    n_train = len(dataset.train)
    epoch_batches = math.ceil(n_train / args.batch_size)
    if args.batches is not None:
        n_batches = args.batches
    elif args.epochs_fraction is not None:
        n_batches = max(1, round(args.epochs_fraction * epoch_batches))
    else:
        n_batches = 8 if device.type == "cpu" else epoch_batches
    n_batches = min(n_batches, epoch_batches)
    n_images = min(n_train, n_batches * args.batch_size)
    workers = args.workers if args.workers is not None else default_workers()
    config = RunConfig(dataset="cifar100", approach="finetune", scenario="lt", initial_classes=50, total_tasks=6,
                       num_workers=workers, device=str(device))
    label_map = np.arange(dataset.num_classes)
    pipelines = {"tensor": TensorPipeline(dataset, label_map, config, device)}
    if args.compare == "pipeline":
        pipelines["loader"] = LoaderPipeline(dataset, label_map, config, device)
    if args.compare == "precision":
        if not bf16_supported(device):
            raise SystemExit(f"error: {device} has no native bf16 support; the precision comparison needs it")
        # name -> (pipeline, bf16 autocast, channels-last)
        variants = {"fp32": ("tensor", False, False), "bf16_cl": ("tensor", True, True)}
    else:
        amp = args.amp and bf16_supported(device)
        variants = {"tensor": ("tensor", amp, args.channels_last), "loader": ("loader", amp, args.channels_last)}
    print(
        f"device={device} threads={threads} loader_workers={workers} compare={args.compare} backbone={args.backbone} "
        f"variants={variants} data={dataset.name} train_images={n_train} (full epoch {epoch_batches} batches) "
        f"timed epoch={n_batches} batches / {n_images} images; {cpu_note()}"
    )

    torch.manual_seed(0)
    backbone = get_backbone(args.backbone)(in_channels=int(dataset.train.images.shape[1]))
    initial = IncrementalNet(backbone, LinearHead(backbone.feature_dim))
    initial.head.grow(dataset.num_classes)
    models, optimisers = {}, {}
    for name, (_, _, channels_last) in variants.items():
        model = copy.deepcopy(initial).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        models[name] = model
        optimisers[name] = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    all_indices = np.arange(n_train)

    def step(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        _, amp, channels_last = variants[name]
        model, opt = models[name], optimisers[name]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)["logits"]
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def epoch(name: str, images: int, train: bool = True) -> None:
        idx = all_indices if images >= n_train else rng.choice(n_train, images, replace=False)
        last = None
        for x, y in pipelines[variants[name][0]].train_batches(idx, args.batch_size, gen):
            if train:
                step(name, x, y)
            else:
                last = x
        if last is not None and device.type == "cpu":
            float(last[0, 0, 0, 0])  # data-only: make sure the batch exists

    # Warm-up: start the loader's persistent workers, the allocator, cudnn's autotuner.
    for name in variants:
        epoch(name, args.warmup_batches * args.batch_size)
    sync()

    def cpu_seconds() -> float:
        """This process's CPU seconds plus the loader workers' (from /proc; Linux)."""
        total = time.process_time()
        it = getattr(getattr(pipelines.get("loader"), "_train_loader", None), "_iterator", None)
        for w in getattr(it, "_workers", []) or []:
            try:
                fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    if args.data_only_batches > 0 and args.compare == "pipeline":
        k = min(n_train, args.data_only_batches * args.batch_size)
        d, dc = interleaved({name: (lambda name=name: epoch(name, k, train=False)) for name in pipelines}, 3, 0, sync, cpu_seconds)
        ips = {name: k / median(t) for name, t in d.items()}
        cpu_k = {name: 1000 * median(t) / k for name, t in dc.items()}
        print(f"  data only ({k} images, 3 rounds): tensor {ips['tensor']:.0f} img/s, loader {ips['loader']:.0f} img/s "
              f"(tensor/loader {paired_ratio(d, 'loader', 'tensor'):.2f}); CPU s per 1000 images incl. workers: "
              f"tensor {cpu_k['tensor']:.2f}, loader {cpu_k['loader']:.2f}")

    t0 = time.perf_counter()
    times, cpu = interleaved({name: (lambda name=name: epoch(name, n_images)) for name in variants}, args.rounds, 0, sync, cpu_seconds)
    ips = {name: n_images / median(t) for name, t in times.items()}
    per_round = {name: [n_images / v for v in t] for name, t in times.items()}
    cpu_k = {name: 1000 * median(t) / n_images for name, t in cpu.items()}
    fast, slow = list(variants)[::-1] if args.compare == "precision" else list(variants)
    print(
        f"{device.type} train ({args.rounds} rounds, {time.perf_counter() - t0:.0f} s): "
        + ", ".join(f"{name} {ips[name]:.1f} img/s ({median(times[name]):.2f} s/epoch-slice, "
                    f"{1000 * median(times[name]) / n_batches:.0f} ms/step)" for name in variants)
        + "; full epoch at these rates: " + ", ".join(f"{name} {n_train / ips[name]:.0f} s" for name in variants)
        + "; CPU s per 1000 images incl. loader workers: " + ", ".join(f"{name} {cpu_k[name]:.1f}" for name in variants)
    )
    spread = sorted(a / b for a, b in zip(per_round[fast], per_round[slow]))
    print(f"  per-round {fast}/{slow} images-per-second: {', '.join(f'{v:.2f}' for v in spread)}")
    print(f"ratio {fast}/{slow} images-per-second: {paired_ratio(per_round, fast, slow):.2f}")


if __name__ == "__main__":
    main()

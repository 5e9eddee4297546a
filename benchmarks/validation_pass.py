"""What the validation figures cost per task: the validation pass vs the test evaluation.

After each task a run scores the test images of the seen classes and, since result.json's
schema 2, the validation hold-out of the seen classes (10% of their training images, so on
a long-tailed set about a tenth of the training set). Both go through one function
(``Learner.class_hits``): same batching, same eval transform, the method's ``eval_logits``.
This script times the two passes side by side at the point a run makes them: a one-task
run of every class (the largest sets a run ever scores) whose training is skipped (the
weights do not change the cost of a forward pass), the two passes alternated round by round.
The last line is the median over rounds of the per-round ratio validation / test.

    python benchmarks/validation_pass.py --dataset digits --rounds 7
    python benchmarks/validation_pass.py --dataset tinyimagenet100_lt --data-root ../shared/data/tinyimagenet100_lt --rounds 3
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cil_core.engine.learner import Learner
from cil_core.experiment import run_experiment

from _common import cpu_note, interleaved, median, paired_ratio, setup_threads, syncer

NUM_CLASSES = {"digits": 10, "synthetic": 20, "tinyimagenet100_lt": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=sorted(NUM_CLASSES))
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    threads = setup_threads(torch.device(args.device), args.threads)
    timings: dict = {}

    def evaluate(self: Learner, ctx):
        n_seen = ctx.n_seen
        test = np.concatenate(self.scenario.test_indices[: ctx.task + 1])
        val = self.validation_indices(ctx)
        sizes = {"test": len(test), "val": int(sum(len(v) for v in val)), "train": int(sum(len(t) for t in self.scenario.train_indices))}
        wall, cpu = interleaved(
            {
                "test": lambda: self.class_hits(test, "test", n_seen),
                "val": lambda: self.evaluate_holdout(ctx, val, "train"),
            },
            args.rounds, args.warmup, syncer(self.device),
        )
        timings.update(wall=wall, cpu=cpu, sizes=sizes)
        return original_evaluate(self, ctx)

    original_evaluate = Learner.evaluate
    Learner.evaluate = evaluate  # type: ignore[method-assign]
    Learner.run_phase = lambda self, phase: None  # type: ignore[method-assign]  # no training
    Learner._update_memory = lambda self, ctx: None  # type: ignore[method-assign]
    k = NUM_CLASSES[args.dataset]
    config = {"dataset": args.dataset, "approach": "finetune", "scenario": "lt", "initial_classes": k,
              "total_tasks": 1, "epochs": 1, "device": args.device, "checkpoint": False}
    if args.data_root:
        config["data_root"] = args.data_root
    run_experiment(config)

    sizes, wall, cpu = timings["sizes"], timings["wall"], timings["cpu"]
    print(f"# {args.dataset}, all {k} classes seen, device {args.device}, {threads} thread(s), {cpu_note()}")
    print(f"images: test {sizes['test']}, validation {sizes['val']}, training {sizes['train']} "
          f"(validation / training {sizes['val'] / max(1, sizes['train']):.3f})")
    for name in ("test", "val"):
        print(f"{name:5s} pass: wall median {median(wall[name]):.3f} s (rounds {min(wall[name]):.3f}-{max(wall[name]):.3f}), "
              f"cpu median {median(cpu[name]):.3f} s")
    print(f"validation/test images {sizes['val'] / max(1, sizes['test']):.3f}")
    print(f"validation/test wall {paired_ratio(wall, 'val', 'test'):.3f}")


if __name__ == "__main__":
    main()

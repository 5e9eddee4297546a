"""DGR's per-step overhead, measured side by side in one process.

Three steps on the same model, batch and teacher, alternated round-robin so machine noise
hits all of them alike:
  * ``lwf``   : plain CE + KD from the teacher, one ``backward`` (the LwF-like baseline);
  * ``dgr``   : this project's DGR step (logit-adjusted CE + DAKD, split classifier gradient,
                batched reweighting, no host sync) through the engine's ``backward_split``;
  * ``naive`` : the public reference code's way: per-class Python loops over classifier
                rows and a host copy of the norms every step.
Each full step is ResNet-32 at batch 128; the rounds are interleaved (order rotated each
round). Before the full steps, a head-only run (a one-layer stand-in backbone) times the
method's own extra work in milliseconds, which the full-step ratio hides in noise.
Prints the median step times and, as its last line, the ratios DGR/LwF and naive/LwF
(median over rounds of the ratio measured within a round). On the CPU with one torch
thread (the default) the ratio is of CPU seconds, the work done, which a loaded machine
does not distort the way it distorts wall time; the wall-time ratio is printed beside it.

    python benchmarks/dgr_step.py --classes 100 1000 --device cpu      # 1 torch thread
    python benchmarks/dgr_step.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
import torch.nn.functional as F

from cil_core import losses
from cil_core.backbones.resnet_cifar import resnet32
from cil_core.engine.learner import Step, backward_split
from cil_core.engine.network import IncrementalNet, LinearHead
from cil_core.methods.dgr import Options, reweighted_classifier_gradient, task_statistics

from _common import cpu_note, interleaved, median, paired_ratio, setup_threads, syncer


class _Ctx:
    def __init__(self, n_old: int, n_seen: int) -> None:
        self.n_old, self.n_seen = n_old, n_seen


def build(num_classes: int, device: torch.device, seed: int = 0, make_backbone=resnet32):
    """The model (64-d features from ``make_backbone()``, built after seeding) and its frozen teacher."""
    torch.manual_seed(seed)
    model = IncrementalNet(make_backbone(), LinearHead(64))
    model.head.grow(num_classes)
    model.to(device)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return model, teacher


def make_steps(model, teacher, num_classes: int, device: torch.device):
    n_old = num_classes // 2
    counts = np.concatenate([np.full(n_old, 20), np.linspace(500, 5, num_classes - n_old).astype(int)])
    class_counts = np.concatenate([np.linspace(500, 5, n_old).astype(int), counts[n_old:]])
    opts = Options()
    stats = task_statistics(train_counts=counts, class_counts=class_counts, n_old=n_old, options=opts, device=device)
    state = {"acc": torch.zeros(num_classes, device=device), "acc_np": np.zeros(num_classes)}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    ctx = _Ctx(n_old, num_classes)

    def losses_for(x, y):
        out = model(x)
        with torch.no_grad():
            t_out = teacher(x)
        logits = out["logits"]
        ce = F.cross_entropy(logits + stats.log_prior, y)
        kd = stats.beta * 4 * losses.dakd_loss(logits[:, :n_old], t_out["logits"][:, :n_old], stats.p, stats.rho_h, 2.0)
        return out, {"ce": ce, "kd": kd}

    def lwf(x, y):
        out = model(x)
        with torch.no_grad():
            t_out = teacher(x)
        loss = F.cross_entropy(out["logits"], y) + 4 * losses.kd_loss(out["logits"][:, :n_old], t_out["logits"][:, :n_old], 2.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10000.0)
        opt.step()

    def dgr(x, y):
        out, terms = losses_for(x, y)

        def classifier_gradient(step, grads):
            w, b, state["acc"] = reweighted_classifier_gradient(
                grad_ce=grads["ce"], grad_kd=grads["kd"], features=step.out["features"],
                accumulated=state["acc"], n_old=n_old, gamma=stats.gamma, options=opts,
            )
            return w, b

        opt.zero_grad(set_to_none=True)
        step = Step(x=x, y=y, out=out, teacher_out=None, ctx=ctx, phase=None)
        backward_split(model.head, step, terms, classifier_gradient)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10000.0)
        opt.step()

    def naive(x, y):
        # The reference code's structure: autograd per loss w.r.t. the head, norms copied to
        # the host, per-row Python loops to reweight and write the gradient back.
        out, terms = losses_for(x, y)
        head = model.head
        g_kd = torch.autograd.grad(terms["kd"], head.weight, retain_graph=True)[0]
        b_kd = torch.autograd.grad(terms["kd"], head.bias, retain_graph=True)[0]
        norm_kd = torch.norm(g_kd[:n_old], dim=1).cpu().numpy()
        g_ce = torch.autograd.grad(terms["ce"], head.weight, retain_graph=True)[0]
        b_ce = torch.autograd.grad(terms["ce"], head.bias, retain_graph=True)[0]
        norm_ce = torch.norm(g_ce, dim=1).cpu().numpy()
        state["acc_np"] += norm_ce
        acc = state["acc_np"]
        w = np.concatenate([acc[:n_old].min() / acc[:n_old], acc[n_old:].min() / acc[n_old:]])
        ratio = acc[n_old:].mean() / acc[:n_old].mean()
        w[:n_old] *= min(1.0, ratio)
        w[n_old:] *= min(1.0, ratio * stats.gamma)
        k = np.linalg.norm([w[c] * norm_ce[c] for c in range(num_classes)]) / np.linalg.norm(norm_kd)
        opt.zero_grad(set_to_none=True)
        (terms["ce"] + terms["kd"]).backward()
        for c in range(num_classes):
            row = w[c] * g_ce[c] + (k * g_kd[c] if c < n_old else 0)
            head.weight.grad[c, :] = row
            head.bias.grad[c] = w[c] * b_ce[c] + (k * b_kd[c] if c < n_old else 0)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10000.0)
        opt.step()

    return {"lwf": lwf, "dgr": dgr, "naive": naive}


class _HeadOnly(torch.nn.Module):
    """A stand-in backbone (one 64x64 layer) so the head-only rounds time the method's own work."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": torch.relu(self.layer(x))}


def build_head_only(num_classes: int, device: torch.device, seed: int = 0):
    return build(num_classes, device, seed, make_backbone=_HeadOnly)


def measure(num_classes: int, device: torch.device, batch: int, rounds: int, warmup: int, head_only: bool = False):
    """Per-round (wall, CPU) times of the three steps, alternated (order rotated every round)."""
    model, teacher = (build_head_only if head_only else build)(num_classes, device)
    steps = make_steps(model, teacher, num_classes, device)
    g = torch.Generator().manual_seed(1)
    shape = (batch, 64) if head_only else (batch, 3, 32, 32)
    x = torch.randn(*shape, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    fns = {name: (lambda fn=fn: fn(x, y)) for name, fn in steps.items()}
    return interleaved(fns, rounds, warmup, syncer(device))


def _ms(t: dict[str, list[float]], digits: int = 1) -> str:
    m = {k: median(v) * 1e3 for k, v in t.items()}
    return f"lwf {m['lwf']:.{digits}f} ms, dgr {m['dgr']:.{digits}f} ms, naive {m['naive']:.{digits}f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=12, help="full-step rounds (ResNet-32), after --warmup")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--head-rounds", type=int, default=200, help="head-only rounds (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = setup_threads(device, args.threads)
    # On the CPU with one thread, CPU seconds are the headline (the machine is shared: wall
    # time also counts the waiting for a core); on CUDA, and with several threads, wall time.
    use_cpu_time = device.type == "cpu" and threads == 1
    clock = "CPU time" if use_cpu_time else "wall time"
    print(f"device={device} threads={threads} headline={clock} {cpu_note()}")
    ratios, wall_ratios = [], []
    for c in args.classes:
        extra = None
        if args.head_rounds > 0:
            hw, hc = measure(c, device, args.batch, args.head_rounds, 10, head_only=True)
            h = hc if use_cpu_time else hw
            extra = median(h["dgr"]) - median(h["lwf"])
            print(f"  head-only classes={c} ({clock}, median of {args.head_rounds}): {_ms(h, 2)} -> DGR's extra work {extra * 1e3:+.2f} ms/step")
        wall, cpu = measure(c, device, args.batch, args.rounds, args.warmup)
        t = cpu if use_cpu_time else wall
        spread = sorted(a / b for a, b in zip(t["dgr"], t["lwf"]))
        print(f"{device.type} classes={c} batch={args.batch} rounds={args.rounds} (medians): wall {_ms(wall)}"
              + (f"; CPU {_ms(cpu)}" if use_cpu_time else ""))
        print(f"  per-round dgr/lwf ({clock}) min {spread[0]:.3f}, quartiles {spread[len(spread) // 4]:.3f}..{spread[(3 * len(spread)) // 4]:.3f}, "
              f"max {spread[-1]:.3f}; ratio of the fastest rounds dgr/lwf {min(t['dgr']) / min(t['lwf']):.3f}, "
              f"naive/lwf {min(t['naive']) / min(t['lwf']):.3f}")
        if extra is not None:
            print(f"  head-only extra / full LwF step: ({median(t['lwf']) * 1e3:.0f} ms {extra * 1e3:+.2f} ms) / {median(t['lwf']) * 1e3:.0f} ms "
                  f"= {(median(t['lwf']) + extra) / median(t['lwf']):.4f}")
        ratios.append(f"C={c}: dgr/lwf {paired_ratio(t, 'dgr', 'lwf'):.3f}, naive/lwf {paired_ratio(t, 'naive', 'lwf'):.3f}")
        wall_ratios.append(f"C={c} dgr/lwf {paired_ratio(wall, 'dgr', 'lwf'):.3f}")
    tail = f" (wall: {', '.join(wall_ratios)})" if use_cpu_time else ""
    print(f"ratio ({clock}, median of per-round ratios) " + "; ".join(ratios) + tail)


if __name__ == "__main__":
    main()

"""DGR's per-step overhead, measured side by side in one process.

Three steps on the same model, batch and teacher, alternated round-robin so machine noise
hits all of them alike:
  * ``lwf``   : plain CE + KD from the teacher, one ``backward`` (the LwF-like baseline);
  * ``dgr``   : this project's DGR step (logit-adjusted CE + DAKD, split classifier gradient,
                batched reweighting, no host sync) through the engine's ``backward_split``;
  * ``naive`` : the public reference code's way: per-class Python loops over classifier
                rows and a host copy of the norms every step.
Prints the median step times and, as its last line, the ratios DGR/LwF and naive/LwF.

    python benchmarks/dgr_step.py --classes 100 1000 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from cil_core import losses
from cil_core.backbones.resnet_cifar import resnet32
from cil_core.engine.learner import Step, backward_split
from cil_core.engine.network import IncrementalNet, LinearHead
from cil_core.methods.dgr import Options, reweighted_classifier_gradient, task_statistics


class _Ctx:
    def __init__(self, n_old: int, n_seen: int) -> None:
        self.n_old, self.n_seen = n_old, n_seen


def build(num_classes: int, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = IncrementalNet(resnet32(), LinearHead(64))
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


def measure(num_classes: int, device: torch.device, batch: int, rounds: int, warmup: int) -> dict[str, float]:
    model, teacher = build(num_classes, device)
    steps = make_steps(model, teacher, num_classes, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for r in range(warmup + rounds):
        for name, fn in steps.items():
            sync()
            t0 = time.perf_counter()
            fn(x, y)
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    ratios = []
    for c in args.classes:
        t = measure(c, device, args.batch, args.rounds, args.warmup)
        print(
            f"{device.type} classes={c} batch={args.batch}: lwf {t['lwf'] * 1e3:.1f} ms, "
            f"dgr {t['dgr'] * 1e3:.1f} ms, naive {t['naive'] * 1e3:.1f} ms"
        )
        ratios.append(f"C={c}: dgr/lwf {t['dgr'] / t['lwf']:.3f}, naive/lwf {t['naive'] / t['lwf']:.3f}")
    print("ratio " + "; ".join(ratios))


if __name__ == "__main__":
    main()

"""What the orchestrator (Ray Tune) costs on top of calling ``cil_core.run_experiment``.

Default mode: N tiny trials (digits, 1 epoch, 2 tasks, finetune, seeds 0..N-1, CPU) run
  * ``orchestrator``: ``python -m orchestrator SWEEP.yaml`` with a temporary sweep file and
    results folder under a temporary directory: embedded Ray, Ray Tune, one trial at a time
    (``resources: {gpu: 0, cpu: 2}`` on a 2-CPU Ray), ``--no-report`` (tables are not trial
    cost);
  * ``direct``: one fresh Python process calling ``run_experiment`` N times with the same
    configs (same ``out`` layout: checkpoints and result.json written alike);
and, to split the orchestrator's fixed cost, two more processes:
  * ``dry_run``: ``python -m orchestrator SWEEP.yaml --dry-run`` (start-up, schema, the
    option check in a child process that imports cil_core; no Ray);
  * ``ray``: ``orchestrator.cluster.connect()`` + ``shutdown()`` (embedded Ray start/stop).
All four alternate in each round (order rotated); medians over rounds. Every wall time
includes starting Python. Last line: the orchestrator/direct wall-time ratio.

``--pack``: 2 trials (digits, ``--pack-epochs`` epochs each), both through the orchestrator:
two at once with ``cpu: 1`` each (1 torch thread each) against one after the other with
``cpu: 2`` (2 torch threads each); last line: the packed/sequential wall-time ratio. This
is the CPU analogue of ``resources: {gpu: 0.25}`` (the GPU figure needs a GPU).

    python benchmarks/sweep_overhead.py --trials 4 --rounds 3
    python benchmarks/sweep_overhead.py --pack --rounds 2
    python benchmarks/sweep_overhead.py --pack-gpu --pack-epochs 2 --rounds 1   # needs one GPU

``--pack-gpu``: 4 trials (synthetic at 32x32, ResNet-32, ``--pack-epochs`` epochs, finetune) on
one GPU, ``gpu: 0.25`` each (all four at once) against ``gpu: 1`` each (one after the other);
last line: the packed/sequential wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_note, interleaved, median, paired_ratio  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def sweep_yaml(name: str, seeds: int, epochs: int, cpu: int, dataset: str, gpu: float = 0, defaults: str = "") -> str:
    return textwrap.dedent(
        f"""\
        name: {name}
        defaults: {{epochs: {epochs}{defaults}}}
        grid:
          dataset: [{dataset}]
          scenario: [lt]
          split: [[5, 2]]
          approach: [finetune]
          seed: [{", ".join(str(s) for s in range(seeds))}]
        resources: {{gpu: {gpu}, cpu: {cpu}}}
        datasets:
          {dataset}: {{hours: 0.001}}
        report: {{tables: [avg_incremental_accuracy], plots: false, paper: false}}
        """
    )


DIRECT = """
import json, sys, time
t0 = time.perf_counter()
import cil_core, cil_core.experiment, torch  # cil_core imports torch lazily: count it apart
import_s = time.perf_counter() - t0
walls = []
for seed in range({seeds}):
    t = time.perf_counter()
    cil_core.run_experiment(dict(dataset={dataset!r}, approach="finetune", scenario="lt", initial_classes=5,
                                 total_tasks=2, epochs={epochs}, seed=seed, device="cpu", out={out!r} + f"/{{seed}}"))
    walls.append(time.perf_counter() - t)
print(json.dumps({{"runs_s": walls, "import_s": import_s, "threads": torch.get_num_threads()}}))
"""

RAY = """
import json, time
t0 = time.perf_counter()
from orchestrator import cluster
info = cluster.connect(None, num_cpus=2, num_gpus=0)
t1 = time.perf_counter()
cluster.shutdown()
print(json.dumps({"start_s": t1 - t0, "stop_s": time.perf_counter() - t1}))
"""


class Runner:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.info: dict[str, list[dict]] = {}
        self.env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.env.pop("RAY_ADDRESS", None)  # always the embedded Ray, never the background sweep's

    def _run(self, key: str, cmd: list[str]) -> None:
        proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{key} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if last.startswith("{"):
            self.info.setdefault(key, []).append(json.loads(last))

    def fresh(self, tag: str) -> Path:
        self.n += 1
        path = self.root / f"{tag}_{self.n}"
        path.mkdir()
        return path

    def orchestrator(self, key: str, sweep: Path, extra: list[str] = (), cpus: int = 2, gpus: int = 0) -> None:
        results = self.fresh(key)
        self._run(key, [PY, "-m", "orchestrator", str(sweep), "--results", str(results), "--num-cpus", str(cpus),
                        "--num-gpus", str(gpus), "--no-report", "-q", *extra])
        walls = [json.loads(p.read_text())["wall_s"] for p in sorted(results.glob("trials/*/result.json"))]
        self.info.setdefault(key, []).append({"runs_s": walls})

    def dry_run(self, sweep: Path) -> None:
        self._run("dry_run", [PY, "-m", "orchestrator", str(sweep), "--dry-run", "--results", str(self.fresh("dry"))])

    def direct(self, seeds: int, epochs: int, dataset: str) -> None:
        out = self.fresh("direct")
        self._run("direct", [PY, "-c", DIRECT.format(seeds=seeds, epochs=epochs, out=str(out), dataset=dataset)])

    def ray(self) -> None:
        self._run("ray", [PY, "-c", RAY])


def med_info(info: list[dict], key: str, total: bool = False) -> float:
    return median([sum(i[key]) if total else i[key] for i in info])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pack", action="store_true", help="2 trials: cpu=1 each at once vs cpu=2 one after the other")
    parser.add_argument("--pack-epochs", type=int, default=8, help="--pack: epochs per trial (digits' protocol: 8)")
    parser.add_argument("--pack-gpu", action="store_true",
                        help="4 short trials (synthetic at 32x32, ResNet-32) on one GPU: gpu=0.25 x4 at once vs gpu=1 in turn")
    args = parser.parse_args()
    print(f"{cpu_note()} python={PY}")

    with tempfile.TemporaryDirectory(prefix="sweep_overhead_") as tmp:
        root = Path(tmp)
        r = Runner(root)
        if args.pack_gpu:
            gpu_defaults = ", image_size: 32, backbone: resnet32, batch_size: 32"
            packed, seq = root / "packed_gpu.yaml", root / "sequential_gpu.yaml"
            packed.write_text(sweep_yaml("packed_gpu", 4, args.pack_epochs, 1, "synthetic", gpu=0.25, defaults=gpu_defaults))
            seq.write_text(sweep_yaml("sequential_gpu", 4, args.pack_epochs, 1, "synthetic", gpu=1, defaults=gpu_defaults))
            fns = {"packed": lambda: r.orchestrator("packed", packed, cpus=4, gpus=1),
                   "sequential": lambda: r.orchestrator("sequential", seq, cpus=4, gpus=1)}
            t, _ = interleaved(fns, args.rounds, 0, lambda: None)
            for key in fns:
                print(f"  {key}: wall {median(t[key]):.1f} s (4 trials, {args.pack_epochs} epochs each; "
                      f"median per-trial run_experiment time {median([w for i in r.info[key] for w in i['runs_s']]):.1f} s)")
            print(f"ratio packed/sequential wall (4 trials on one GPU, gpu=0.25 x4 at once vs gpu=1 in turn): "
                  f"{paired_ratio(t, 'packed', 'sequential'):.2f}")
            return
        if args.pack:
            packed, seq = root / "packed.yaml", root / "sequential.yaml"
            packed.write_text(sweep_yaml("packed", 2, args.pack_epochs, 1, args.dataset))
            seq.write_text(sweep_yaml("sequential", 2, args.pack_epochs, 2, args.dataset))
            fns = {"packed": lambda: r.orchestrator("packed", packed), "sequential": lambda: r.orchestrator("sequential", seq)}
            t, _ = interleaved(fns, args.rounds, 0, lambda: None)
            for key in fns:
                print(f"  {key}: wall {median(t[key]):.1f} s (2 trials, {args.pack_epochs} epochs each; "
                      f"median per-trial run_experiment time {median([w for i in r.info[key] for w in i['runs_s']]):.1f} s)")
            print(f"ratio packed/sequential wall (2 trials, cpu=1 x2 at once vs cpu=2 in turn): {paired_ratio(t, 'packed', 'sequential'):.2f}")
            return

        sweep = root / "overhead.yaml"
        sweep.write_text(sweep_yaml("overhead", args.trials, args.epochs, 2, args.dataset))
        fns = {
            "orchestrator": lambda: r.orchestrator("orchestrator", sweep),
            "direct": lambda: r.direct(args.trials, args.epochs, args.dataset),
            "dry_run": lambda: r.dry_run(sweep),
            "ray": r.ray,
        }
        t, _ = interleaved(fns, args.rounds, 0, lambda: None)
        n = args.trials
        orch, direct, dry, ray = (median(t[k]) for k in ("orchestrator", "direct", "dry_run", "ray"))
        runs_orch = med_info(r.info["orchestrator"], "runs_s", total=True)
        runs_direct = med_info(r.info["direct"], "runs_s", total=True)
        ray_start, ray_stop = med_info(r.info["ray"], "start_s"), med_info(r.info["ray"], "stop_s")
        print(f"{n} trials ({args.dataset}, {args.epochs} epoch, 2 tasks, finetune), {args.rounds} rounds, medians:")
        per_orch = median([w for i in r.info["orchestrator"] for w in i["runs_s"]])
        per_direct = median([w for i in r.info["direct"] for w in i["runs_s"]])
        print(f"  orchestrator (Ray Tune) wall {orch:.1f} s; the trials' own run_experiment time inside it {runs_orch:.1f} s "
              f"(median trial {per_orch:.2f} s; torch threads = the trial's cpu request, 2)")
        print(f"  direct (one process)     wall {direct:.1f} s; run_experiment calls {runs_direct:.1f} s "
              f"(median call {per_direct:.2f} s, the first one loads the data set and warms up; torch threads "
              f"{r.info['direct'][0]['threads']})")
        direct_import = med_info(r.info["direct"], "import_s")
        print(f"  direct's import of torch + cil_core: {direct_import:.1f} s (in its wall, not in its run_experiment time)")
        print(f"  fixed costs of the orchestrator: Ray start {ray_start:.1f} s, Ray stop {ray_stop:.1f} s "
              f"(a process doing only that: {ray:.1f} s); --dry-run process (start-up, schema, option check "
              f"in a child that imports cil_core; no Ray) {dry:.1f} s")
        print(f"  overhead per trial: {(orch - direct) / n:.2f} s all-in (N={n}: (orchestrator - direct) / N); "
              f"{(orch - direct - ray_start - ray_stop) / n:.2f} s without Ray start/stop; "
              f"run_experiment itself {(runs_orch - runs_direct) / n:+.2f} s per trial inside Ray vs direct")
        print(f"ratio orchestrator/direct wall (N={n}): {paired_ratio(t, 'orchestrator', 'direct'):.2f}")


if __name__ == "__main__":
    main()

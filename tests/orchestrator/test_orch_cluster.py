"""A real multi-node Ray cluster on this machine: two worker nodes declaring one GPU each.

Trials (real cil_core runs on the synthetic data set) asking for one GPU are spread over
both nodes and never overlap on a node; a trial sees only its GPU; a request no node can
satisfy is refused before anything runs; a diverging trial fails once, permanently.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import write_sweep

from orchestrator.cli import main
from orchestrator.status import trial_status
from orchestrator.store import Store, trial_rel
from orchestrator.sweep import load_sweep
from orchestrator.trials import expand

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]

GPU_SWEEP = """
name: gpu_spread
defaults: {epochs: 1}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[10, 2]]
  approach: [finetune, dgr]
  seed: [0, 1]
resources: {gpu: 1, cpu: 1}
"""

DIVERGE_SWEEP = """
name: diverge
defaults: {epochs: 1, device: cpu}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[10, 2]]
  approach: [finetune, {name: finetune-hot, approach: finetune, set: {lr: 1.0e12}}]
  seed: [0]
resources: {gpu: 0, cpu: 1}
"""


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, [w.node_id for w in workers]
    c.shutdown()


def _attempts(folder):
    lines = [json.loads(line) for line in (folder / "attempts.jsonl").read_text().splitlines() if line.strip()]
    starts = [a for a in lines if a["event"] == "start"]
    ends = [a for a in lines if a["event"] == "end"]
    return starts, ends


def test_gpu_trials_spread_over_both_nodes_one_at_a_time_per_gpu(cluster, tmp_path, capsys):
    c, worker_ids = cluster
    sweep = write_sweep(tmp_path, GPU_SWEEP)
    results = tmp_path / "results"
    code = main([str(sweep), "--address", c.address, "--results", str(results), "--max-failures", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "| finetune |" in out and "Average incremental accuracy" in out
    store = Store(results)
    trials = expand(load_sweep(sweep))
    intervals: dict[str, list[tuple[float, float]]] = {}
    for spec in trials:
        folder = store.local(trial_rel(spec.id))
        starts, ends = _attempts(folder)
        assert len(starts) == 1 and ends[-1]["outcome"] == "finished"
        assert starts[0]["node_id"] in worker_ids  # the head declares no GPU
        assert starts[0]["CUDA_VISIBLE_DEVICES"] in ("0", "1")  # Ray gave it one GPU, and only that one
        intervals.setdefault(starts[0]["node_id"], []).append((starts[0]["time"], ends[-1]["time"]))
        assert trial_status(store, spec).state == "done"
    assert set(intervals) == set(worker_ids), "both GPU nodes must be used"
    for node, spans in intervals.items():
        spans.sort()
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s1 >= e0, f"two trials overlapped on node {node}: {spans}"


def test_request_no_node_can_satisfy_is_refused(cluster, tmp_path, capsys):
    c, _ = cluster
    sweep = write_sweep(tmp_path, GPU_SWEEP)
    code = main([str(sweep), "--address", c.address, "--results", str(tmp_path / "r"), "--resources", "gpu=2,cpu=1"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {sweep}: resources: 4 trial(s) (synthetic) ask for 2 GPU and 1 CPU each, but no node offers that (nodes: ")
    assert lines[0].count("1 CPU 1 GPU") == 2 and "lower the request (e.g. --resources gpu=0,cpu=1)" in lines[0]


def test_diverged_trial_fails_permanently_without_endless_retries(cluster, tmp_path, capsys):
    c, _ = cluster
    sweep = write_sweep(tmp_path, DIVERGE_SWEEP)
    results = tmp_path / "results"
    args = [str(sweep), "--address", c.address, "--results", str(results), "--max-failures", "3"]
    assert main(args) == 1
    err = capsys.readouterr().err
    trials = {t.variant: t for t in expand(load_sweep(sweep))}
    hot = trials["finetune-hot"]
    assert f"{hot.id}  [failed, permanent] TrainingDiverged: loss became non-finite" in err
    store = Store(results)
    folder = store.local(trial_rel(hot.id))
    failed = json.loads((folder / "failed.json").read_text())
    assert failed["kind"] == "diverged" and re.search(r"in task \d+, phase train, epoch \d+", failed["error"])  # names where
    starts, _ = _attempts(folder)
    assert len(starts) == 1, "Ray's retries must not train the diverged trial again"
    assert trial_status(store, trials["finetune"]).state == "done"
    # a rerun leaves it alone (and still says it failed); --retry-failed runs it again
    assert main(args) == 1
    capsys.readouterr()
    assert len(_attempts(folder)[0]) == 1
    assert main(args + ["--retry-failed"]) == 1
    capsys.readouterr()
    assert len(_attempts(folder)[0]) == 2
    assert main(["status", str(results)]) == 0
    assert "permanent diverged" in capsys.readouterr().out
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != ""  # the driver's own environment is untouched

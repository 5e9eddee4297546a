"""The orchestrator packs 4 trials on one GPU (``gpu: 0.25``), through its public CLI and a
sweep file: all four finish on the GPU, and their training overlaps in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SWEEP = """
name: cuda_packing
description: four short synthetic DGR trials packed on one GPU
defaults: {image_size: 32, backbone: resnet32, epochs: 3, batch_size: 32}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[10, 2]]
  approach: [dgr]
  seed: [0, 1, 2, 3]
resources: {gpu: 0.25, cpu: 1}
datasets:
  synthetic: {hours: 0.01}
report: {tables: [avg_incremental_accuracy], plots: false, paper: false}
"""


def test_orchestrator_packs_four_trials_on_one_gpu(tmp_path):
    sweep = tmp_path / "packing.yaml"
    sweep.write_text(SWEEP)
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(sweep), "--results", str(results), "--num-gpus", "1", "--num-cpus", "4", "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = sorted(results.rglob("result.json"))
    finished = [json.loads(p.read_text()) for p in found]
    finished = [r for r in finished if r.get("status") == "finished"]
    assert len(finished) == 4, found
    assert all(r["execution"]["device"].startswith("cuda") for r in finished)
    # [start, end] of each trial from its result file's time and wall_s: packed trials overlap
    spans = sorted((p.stat().st_mtime - json.loads(p.read_text())["wall_s"], p.stat().st_mtime) for p in found
                   if json.loads(p.read_text()).get("status") == "finished")
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), spans

"""A hyperparameter search (Optuna + ASHA) over real cil_core runs; the best configs and a
table of all trials; a rerun of a finished search starts nothing."""

from __future__ import annotations

import json

import pytest
from conftest import write_sweep

from orchestrator.cli import main
from orchestrator.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]

SEARCH = """
name: search_test
defaults: {epochs: 1, device: cpu}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[5, 4]]
  approach: [dgr]
  seed: [0]
resources: {gpu: 0, cpu: 1}
search:
  metric: avg_incremental_accuracy
  mode: max
  num_samples: 4
  searcher: optuna
  seed: 0
  space:
    dgr.kd_base: {uniform: [0.3, 1.5]}
    lr: {loguniform: [0.01, 0.2]}
  early_stopping: {grace_period: 2, reduction_factor: 2}
  max_concurrent: 2
report: {top_k: 3}
"""


def test_search_finds_best_configs_and_lists_all_trials(tmp_path, capsys):
    sweep = write_sweep(tmp_path, SEARCH)
    results = tmp_path / "results"
    code = main([str(sweep), "--results", str(results), "--num-cpus", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    store = Store(results)
    trial_dirs = store.list_dirs("trials")
    assert len(trial_dirs) == 4
    params = [json.loads((results / "trials" / t / "trial.json").read_text())["params"] for t in trial_dirs]
    assert all(0.3 <= p["dgr.kd_base"] <= 1.5 and 0.01 <= p["lr"] <= 0.2 for p in params)
    assert len({round(p["lr"], 8) for p in params}) == 4
    md = store.local("search.md").read_text()
    assert "### Best 3 by avg_incremental_accuracy" in md and "### All trials" in md
    assert "| rank | dgr.kd_base | lr | avg_incremental_accuracy | tasks | trial |" in md
    assert out.strip().startswith("# search_test: hyperparameter search")
    rows = store.local("search.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("group,rank,trial,param.dgr.kd_base,param.lr,avg_incremental_accuracy")
    # status lists the sampled trials (not the search's base trial)
    assert main(["status", str(results)]) == 0
    status = capsys.readouterr().out
    assert "4 trials:" in status and "0 pending" in status and "stopped early" in status
    summaries = [f for f in results.iterdir() if f.name.startswith("search_") and f.suffix == ".json"]
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["finished"]
    # a finished search is not run again
    assert main([str(sweep), "--results", str(results), "--num-cpus", "2"]) == 0
    assert "finished earlier" in capsys.readouterr().err
    assert len(store.list_dirs("trials")) == 4

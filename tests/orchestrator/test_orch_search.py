"""Hyperparameter search that selects on validation and reports on test.

A real Optuna + ASHA search on digits picks the sample with the best validation figure,
Tune never receives a test figure (read from Tune's own result records), the report shows
validation and test side by side, a rerun runs nothing, ``evaluate-best`` reruns the best
and the default configuration over seeds; an interrupted search continues with
``Tuner.restore``; a search on a test metric is refused before Ray starts unless the sweep
says ``allow_test_selection: true``, and then its report warns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO, fake_result, wait_for, write_sweep

from cil_core.metrics import TEST_REPORT_KEYS
from orchestrator.cli import main
from orchestrator.search import ranked
from orchestrator.store import Store, trial_rel
from orchestrator.sweep import load_sweep, load_sweep_text
from orchestrator.trainable import run_trial
from orchestrator.trials import expand, sampled_trial, search_group_id
from orchestrator.tune_runner import write_sweep_meta

SEARCH = """
name: search_test
defaults: {epochs: 1, device: cpu}
grid:
  dataset: [digits]
  scenario: [lt]
  split: [[4, 3]]
  approach: [dgr]
  seed: [0]
resources: {gpu: 0, cpu: 1}
search:
  num_samples: 4
  searcher: optuna
  seed: 0
  space:
    dgr.kd_base: {uniform: [0.3, 1.5]}
    lr: {loguniform: [0.01, 0.2]}
  early_stopping: {grace_period: 2, reduction_factor: 2}
  max_concurrent: 2
  eval_seeds: [0, 1]
report: {top_k: 3, plots: false}
"""
TEST_FIGURES = set(TEST_REPORT_KEYS) | {"avg_incremental_accuracy", "last_accuracy"}
ENV = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def starts(folder) -> int:
    path = folder / "attempts.jsonl"
    return path.read_text().count('"event": "start"') if path.exists() else 0


# ----------------------------------------------------------------------------- no Ray


def test_a_test_metric_is_refused_before_ray_starts_unless_allowed(tmp_path):
    text = SEARCH.replace("  num_samples: 4", "  metric: avg_incremental_accuracy\n  num_samples: 4")
    sweep = write_sweep(tmp_path, text)
    probe = "import sys; from orchestrator.cli import main; code = main(sys.argv[1:]); print('ray imported:', 'ray' in sys.modules); sys.exit(code)"
    refused = subprocess.run([sys.executable, "-c", probe, str(sweep), "--results", str(tmp_path / "r")], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: {sweep}: search: metric 'avg_incremental_accuracy' is measured on the test set: select on 'val_avg_incremental_accuracy' "
        "(the validation hold-out), or add 'allow_test_selection: true' to select on test data knowingly"
    ]
    assert "ray imported: False" in refused.stdout and not (tmp_path / "r").exists()
    allowed = load_sweep_text(text.replace("  num_samples: 4", "  allow_test_selection: true\n  num_samples: 4"), "x.yaml")
    assert allowed.search.metric == "avg_incremental_accuracy"
    assert load_sweep_text(SEARCH, "x.yaml").search.metric == "val_avg_incremental_accuracy"  # the default
    assert load_sweep(REPO / "sweeps" / "search_dgr.yaml").search.metric == "val_avg_incremental_accuracy"


def _fake_search(folder, text: str, figures: list[tuple[float, float]]) -> Store:
    """A search's results folder as a run leaves it: one finished sample per (val, test) pair."""
    sweep = load_sweep_text(text, "x.yaml")
    base = expand(sweep)[0]
    group = search_group_id(base, sweep.search)
    store = Store(folder / "results")
    store.mkdir("")
    write_sweep_meta(store, sweep, [base], "x.yaml")
    for i, (val, test) in enumerate(figures):
        spec = sampled_trial(base, {"lr": 0.01 * (i + 1), "dgr.kd_base": 0.5}, group)
        result = fake_result(spec.config, avg=test, last=test - 5)
        result |= {"val_avg_incremental_accuracy": val, "val_acc_seen": [val + 1] * 3, "val_last_accuracy": val - 5}
        store.write_json(trial_rel(spec.id, "trial.json"), spec.to_json())
        store.write_json(trial_rel(spec.id, "result.json"), result)
    return store


def test_report_ranks_on_validation_with_test_beside_and_warns_when_selecting_on_test(tmp_path, capsys):
    figures = [(60.0, 70.0), (80.0, 50.0), (70.0, 90.0)]  # (val, test): the rankings disagree
    store = _fake_search(tmp_path / "val", SEARCH, figures)
    assert main(["report", store.root]) == 0
    out = capsys.readouterr().out
    best = out[out.index("### Best 3"):].splitlines()
    assert best[2] == "| rank | dgr.kd_base | lr | val avg_incremental_accuracy | test avg_incremental_accuracy | tasks | trial |"
    assert [row.split(" | ")[3:5] for row in best[4:7]] == [["80", "50"], ["70", "90"], ["60", "70"]]
    assert "WARNING" not in out and "evaluate-best" in out

    on_test = SEARCH.replace("  num_samples: 4", "  metric: avg_incremental_accuracy\n  allow_test_selection: true\n  num_samples: 4")
    store = _fake_search(tmp_path / "test", on_test, figures)
    assert main(["report", store.root]) == 0
    out = capsys.readouterr().out
    assert out.index("WARNING: this search selected on the test metric `avg_incremental_accuracy`") < out.index("| rank |")
    best = out[out.index("### Best 3"):].splitlines()
    assert [row.split(" | ")[3:5] for row in best[4:7]] == [["70", "90"], ["60", "70"], ["80", "50"]]


def test_a_search_trial_reports_validation_figures_only_unless_test_selection_is_allowed(tmp_path):
    store = _fake_search(tmp_path, SEARCH, [(61.0, 71.0)])
    spec = json.loads(store.read_text(trial_rel(store.list_dirs("trials")[0], "trial.json")))
    config = {"trial": {**spec, "params": {}, "search": None}, "search": spec["search"], "params": spec["params"], "store": store.root}
    for allowed in (False, True):
        reports: list[dict] = []
        run_trial({**config, "test_selection": allowed, "_report": reports.append})  # finished: the summary report only
        assert reports[-1]["final"] and reports[-1]["val_avg_incremental_accuracy"] == 61.0 and reports[-1]["val_last_accuracy"] == 56.0
        assert (reports[-1].get("avg_incremental_accuracy") == 71.0) is allowed and bool(TEST_FIGURES & set(reports[-1])) is allowed


# ----------------------------------------------------------------------------- real Ray searches


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_digits_search_selects_on_validation_then_evaluates_the_best(tmp_path, capsys):
    sweep = write_sweep(tmp_path, SEARCH)
    results = tmp_path / "results"
    assert main([str(sweep), "--results", str(results), "--num-cpus", "2"]) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    store = Store(results)
    trial_dirs = store.list_dirs("trials")
    assert len(trial_dirs) == 4

    # Tune's own records of every report: validation figures and counters, never a test figure
    records = [json.loads(line) for path in (results / "ray").rglob("result.json") for line in path.read_text().splitlines()]
    assert len(records) >= 4 and all("val_avg_incremental_accuracy" in r for r in records)
    assert not TEST_FIGURES & {k for r in records for k in r}

    # the report's best is the finished sample with the best validation figure; test beside it
    finished = {t: json.loads((results / "trials" / t / "result.json").read_text()) for t in trial_dirs if (results / "trials" / t / "result.json").exists()}
    best_id = max(finished, key=lambda t: finished[t]["val_avg_incremental_accuracy"])
    best = out[out.index("### Best 3 by val_avg_incremental_accuracy"):].splitlines()[4]
    assert best.startswith("| 1 |") and best.endswith(f"| {best_id} |")
    cells = best.split(" | ")
    assert float(cells[3]) == pytest.approx(finished[best_id]["val_avg_incremental_accuracy"], abs=0.01)
    assert float(cells[4]) == pytest.approx(finished[best_id]["avg_incremental_accuracy"], abs=0.01)

    # a finished search is not run again
    attempts = {t: starts(results / "trials" / t) for t in trial_dirs}
    assert main([str(sweep), "--results", str(results), "--num-cpus", "2"]) == 0
    assert "finished earlier" in capsys.readouterr().err
    assert {t: starts(results / "trials" / t) for t in store.list_dirs("trials")} == attempts

    # evaluate-best: the best and the default configuration x eval_seeds, test mean ± std
    assert main(["evaluate-best", str(sweep), "--results", str(results), "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    evaluated = [json.loads((results / "evaluate" / "trials" / t / "trial.json").read_text()) for t in Store(results / "evaluate").list_dirs("trials")]
    best_params = json.loads((results / "trials" / best_id / "trial.json").read_text())["params"]
    assert sorted((e["variant"], e["config"]["seed"]) for e in evaluated) == [("dgr", 0), ("dgr", 1), ("dgr-best", 0), ("dgr-best", 1)]
    assert all(e["params"] == best_params for e in evaluated if e["variant"] == "dgr-best")
    assert best_id in {e["id"] for e in evaluated}  # seed 0 of the best is the search's own configuration
    assert f"- dgr-best (" in out and f"(trial {best_id})" in out
    for row in ("dgr", "dgr-best"):
        assert any(line.startswith(f"| {row} |") and "±" in line for line in out.splitlines()), out


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_interrupted_search_continues_with_tuner_restore(tmp_path):
    text = SEARCH.replace("epochs: 1", "epochs: 6").replace("num_samples: 4", "num_samples: 3").replace("max_concurrent: 2", "max_concurrent: 1")
    text = text.replace("  early_stopping: {grace_period: 2, reduction_factor: 2}\n", "")
    sweep = write_sweep(tmp_path, text)
    results = tmp_path / "results"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cli(str(sweep), "--results", str(results), "--num-cpus", "2"), cwd=REPO, env=ENV, stdout=log, stderr=log, text=True, start_new_session=True)
    try:
        def one_finished_one_started():
            folders = list((results / "trials").glob("*")) if (results / "trials").exists() else []
            done = [f for f in folders if (f / "result.json").exists()]
            return done and len([f for f in folders if starts(f)]) >= 2 and done
        done_before = wait_for(one_finished_one_started, timeout=600, every=0.1, what="a finished sample and a started one")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode != 0 and "search not finished" in (tmp_path / "first.log").read_text()
    mtimes = {f.name: (f / "result.json").stat().st_mtime_ns for f in done_before}

    again = subprocess.run(cli(str(sweep), "--results", str(results), "--num-cpus", "2"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the interrupted search" in again.stderr
    store = Store(results)
    assert len(store.list_dirs("trials")) == 3  # the restored study goes on to 3 samples, not 3 more
    for name, mtime in mtimes.items():  # finished samples were not run again
        assert starts(results / "trials" / name) == 1 and (results / "trials" / name / "result.json").stat().st_mtime_ns == mtime
    groups = ranked(store, "val_avg_incremental_accuracy", "max")
    assert [len(r) for r in groups.values()] == [3] and all(r["finished"] for r in next(iter(groups.values())))

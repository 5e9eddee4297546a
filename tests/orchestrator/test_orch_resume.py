"""Interrupt a sweep (Ctrl-C) after its first trial finished, run it again: the finished
trial is not run again, and the final tables equal those of an uninterrupted run."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, write_sweep

from orchestrator.store import Store, trial_rel
from orchestrator.sweep import expand, load_sweep

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(900)]

SWEEP = """
name: resume
defaults: {epochs: 8, device: cpu}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[5, 4]]
  approach: [finetune, dgr]
  seed: [0, 1, 2, 3]
resources: {gpu: 0, cpu: 1}
tune: {max_concurrent_trials: 1}
report: {plots: false}
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def starts(folder) -> int:
    path = folder / "attempts.jsonl"
    return path.read_text().count('"event": "start"') if path.exists() else 0


def csv_rows(store: Store) -> list[dict]:
    return list(csv.DictReader(io.StringIO(store.local("tables.csv").read_text())))


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    sweep = write_sweep(tmp_path, SWEEP)
    trials = expand(load_sweep(sweep))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # the reference: one uninterrupted run
    ref = subprocess.run(cli(str(sweep), "--results", str(tmp_path / "ref"), "--num-cpus", "2"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    # the same sweep, interrupted (SIGINT, as Ctrl-C) once its first trial finished
    results = tmp_path / "results"
    store = Store(results)
    proc = subprocess.Popen(cli(str(sweep), "--results", str(results), "--num-cpus", "2"), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    finished_first: list[str] = []
    while time.monotonic() < deadline and not finished_first:
        finished_first = [t.id for t in trials if (results / "trials" / t.id / "result.json").exists()]
        time.sleep(0.05)
    assert finished_first, "no trial finished"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, "an interrupted sweep must not report success"
    done_before = [t.id for t in trials if (results / "trials" / t.id / "result.json").exists()]
    assert 1 <= len(done_before) < len(trials), "the interrupt should leave work to do"
    assert "did not finish" in err and "Run the same command again to resume" in err
    attempts_before = {t.id: starts(results / "trials" / t.id) for t in trials}

    # status reads the files, without Ray
    status = subprocess.run(cli("status", str(results)), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and f"{len(done_before)} done" in status.stdout

    again = subprocess.run(cli(str(sweep), "--results", str(results), "--num-cpus", "2"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(done_before)} finished earlier (skipped)" in again.stderr
    for tid in done_before:  # finished trials were not run again
        assert starts(results / "trials" / tid) == attempts_before[tid] == 1
    for t in trials:
        if t.id not in done_before:
            assert starts(results / "trials" / t.id) == attempts_before[t.id] + 1

    # the final tables equal those of the uninterrupted run (tables.csv has no timestamp)
    reference = Store(tmp_path / "ref")
    assert csv_rows(store) == csv_rows(reference)
    for t in trials:
        ours = json.loads(store.local(trial_rel(t.id, "result.json")).read_text())
        theirs = json.loads(reference.local(trial_rel(t.id, "result.json")).read_text())
        assert ours["acc_matrix"] == theirs["acc_matrix"], t.id
    assert [r for r in store.local("tables.md").read_text().splitlines() if r.startswith("|")] == [
        r for r in reference.local("tables.md").read_text().splitlines() if r.startswith("|")
    ]

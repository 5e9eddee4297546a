"""Interrupt a sweep after its first trial finished, run it again: the finished trials are
not run again, and the final tables equal those of an uninterrupted run.

Two ways to stop the driver: Ctrl-C (SIGINT: Tune stops gracefully) and SIGKILL (nothing
runs on the way out: its lock names a dead pid, its Ray processes are orphaned). While the
first driver runs, a second one on the same results directory is refused."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO, json_lines, kill_leftovers, process_tree, wait_for, write_sweep

from orchestrator.store import Store, trial_rel
from orchestrator.sweep import load_sweep
from orchestrator.trials import expand

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


ENV = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep run once, uninterrupted."""
    folder = tmp_path_factory.mktemp("reference")
    sweep = write_sweep(folder, SWEEP)
    ref = subprocess.run(cli(str(sweep), "--results", str(folder / "ref"), "--num-cpus", "2"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    return Store(folder / "ref")


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, reference, how):
    sweep = write_sweep(tmp_path, SWEEP)
    trials = expand(load_sweep(sweep))

    # the same sweep, stopped once its first trial finished; its own session: the driver
    # and what it starts can be found (and cleaned up) after a SIGKILL
    results = tmp_path / "results"
    store = Store(results)
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cli(str(sweep), "--results", str(results), "--num-cpus", "2"), cwd=REPO, env=ENV, stdout=log, stderr=log, text=True, start_new_session=True)
    tree: list[int] = []
    try:
        # a second orchestrator on the same results directory is refused while this one runs
        wait_for(lambda: (store.read_json(".orchestrator.lock") or {}).get("pid") == proc.pid, timeout=120, what="the driver's lock")
        second = subprocess.run(cli(str(sweep), "--results", str(results)), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stderr[-2000:]
        assert f"in use by orchestrator pid {proc.pid} on host {socket.gethostname()}" in second.stderr

        def one_finished_one_midway():
            # a trial finished, and another one has finished its first task but not the last
            folders = [results / "trials" / t.id for t in trials]
            finished = [f for f in folders if (f / "result.json").exists()]
            midway = [f for f in folders if not (f / "result.json").exists() and (f / "checkpoints" / "task_000.pt").exists()]
            return finished and midway and (finished, midway[0])

        _, midway = wait_for(one_finished_one_midway, timeout=400, every=0.05, what="a finished trial and one midway")
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)
            assert proc.returncode != 0, "an interrupted sweep must not report success"
        else:
            tree = process_tree(proc.pid)  # its Ray: GCS, raylet, agents, workers
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    err = (tmp_path / "first.log").read_text()
    done_before = [t.id for t in trials if (results / "trials" / t.id / "result.json").exists()]
    assert 1 <= len(done_before) < len(trials), "the interrupt should leave work to do"
    if how == "sigint":
        assert "did not finish" in err and "Run the same command again to resume" in err
    else:
        lock = store.read_json(".orchestrator.lock")  # a SIGKILLed driver leaves its lock behind
        assert lock and lock["pid"] == proc.pid
    attempts_before = {t.id: starts(results / "trials" / t.id) for t in trials}
    mtimes = {tid: (results / "trials" / tid / "result.json").stat().st_mtime_ns for tid in done_before}

    try:
        # status reads the files, without Ray
        status = subprocess.run(cli("status", str(results)), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and f"{len(done_before)} done" in status.stdout

        # the same command again (after a SIGKILL: the dead driver's lock is taken over, and its
        # orphaned Ray processes, if any still run, do not get in the way)
        again = subprocess.run(
            cli(str(sweep), "--results", str(results), "--num-cpus", "2"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, start_new_session=True
        )
    finally:
        leftovers = kill_leftovers(tree, group=proc.pid)
    assert again.returncode == 0, again.stderr[-3000:]
    if how == "sigkill":
        assert f"taking over the stale lock of pid {proc.pid}" in again.stderr
    assert f"{len(done_before)} finished earlier (skipped)" in again.stderr
    for tid in done_before:  # finished trials were not run again
        assert starts(results / "trials" / tid) == attempts_before[tid] == 1
        assert (results / "trials" / tid / "result.json").stat().st_mtime_ns == mtimes[tid]
    for t in trials:
        if t.id not in done_before:
            assert starts(results / "trials" / t.id) == attempts_before[t.id] + 1
    if how == "sigkill":
        assert midway.name not in done_before, "the kill should come while a trial is midway"
    if midway.name not in done_before:  # the trial stopped midway resumed: its first task was not trained again
        assert "resumed after task" in (midway / "stderr.log").read_text()
        epochs = [(r["task"], r["phase"], r["epoch"]) for r in json_lines(midway / "log.jsonl") if r["phase"] != "eval"]
        assert epochs.count((0, "train", 0)) == 1, epochs
    assert store.read_json(".orchestrator.lock") is None  # released by the rerun

    # the final tables equal those of the uninterrupted run (tables.csv has no timestamp),
    # as the rerun wrote them and as `report` writes them again
    assert csv_rows(store) == csv_rows(reference)
    report = subprocess.run(cli("report", str(results), "--no-plots"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert csv_rows(store) == csv_rows(reference)
    for t in trials:
        ours = json.loads(store.local(trial_rel(t.id, "result.json")).read_text())
        theirs = json.loads(reference.local(trial_rel(t.id, "result.json")).read_text())
        assert ours["acc_matrix"] == theirs["acc_matrix"], t.id
    assert [r for r in store.local("tables.md").read_text().splitlines() if r.startswith("|")] == [
        r for r in reference.local("tables.md").read_text().splitlines() if r.startswith("|")
    ]
    print("leftover Ray processes of the killed driver, killed after the rerun:", leftovers)

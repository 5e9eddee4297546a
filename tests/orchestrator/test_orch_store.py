"""The results store as a local path and as a URI (pyarrow's file:// stands in for s3:// etc.)."""

from __future__ import annotations

import pytest

from orchestrator.store import Store
from orchestrator.trainable import TrialFolder


@pytest.mark.parametrize("kind", ["path", "uri"])
def test_store_reads_writes_and_lists(tmp_path, kind):
    root = tmp_path / "results"
    store = Store(str(root) if kind == "path" else f"file://{root}")
    assert store.is_local == (kind == "path")
    assert store.read_json("sweep.json") is None and not store.exists("sweep.json")
    store.write_json("sweep.json", {"a": 1})
    store.write_text("trials/x/stderr.log", "one\ntwo\nthree\n")
    store.write_text("trials/y/trial.json", "{not json")
    assert store.read_json("sweep.json") == {"a": 1}
    assert store.read_json("trials/y/trial.json") is None
    assert store.tail("trials/x/stderr.log", 2) == ["two", "three"]
    assert store.list_dirs("trials") == ["x", "y"] and store.list_dirs("nothing") == []
    store.delete("sweep.json")
    assert not store.exists("sweep.json")
    assert store.uri("ray").endswith("results/ray")


def test_trial_folder_on_a_uri_store_syncs_through_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_SCRATCH", str(tmp_path / "scratch"))
    store = Store(f"file://{tmp_path}/results")
    folder = TrialFolder(store, "t1")
    assert folder.dir == tmp_path / "scratch" / "t1"
    folder.log_attempt(event="start")
    (folder.dir / "checkpoints").mkdir()
    (folder.dir / "checkpoints" / "task_000.pt").write_bytes(b"x" * 10)
    folder.sync()
    assert '"event": "start"' in store.read_text("trials/t1/attempts.jsonl")
    assert store.read_bytes("trials/t1/checkpoints/task_000.pt") == b"x" * 10
    assert store.list_dirs("trials/t1/checkpoints", files=True) == ["task_000.pt"]
    folder.sync(done=True)
    assert not folder.dir.exists()
    again = TrialFolder(store, "t1")  # a retry on another node starts from the store's copy
    assert (again.dir / "checkpoints" / "task_000.pt").read_bytes() == b"x" * 10


URI_SWEEP = """
name: uri
defaults: {epochs: 1, device: cpu}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[10, 2]]
  approach: [finetune, dgr]
  seed: [0]
resources: {gpu: 0, cpu: 1}
report: {plots: false}
"""


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_file_uri_results_store_end_to_end(tmp_path, monkeypatch, capsys):
    """Run, rerun (nothing trained again), status and report, all through ``file://``."""
    from conftest import write_sweep

    from orchestrator.cli import main

    monkeypatch.setenv("ORCHESTRATOR_SCRATCH", str(tmp_path / "scratch"))
    uri = f"file://{tmp_path}/results"
    sweep = write_sweep(tmp_path, URI_SWEEP)
    assert main([str(sweep), "--results", uri, "--num-cpus", "2", "-q"]) == 0
    store = Store(uri)
    trials = store.read_json("sweep.json")["trials"]
    assert len(trials) == 2
    for t in trials:
        result = store.read_json(f"trials/{t['id']}/result.json")
        assert result["status"] == "finished" and t["id"].endswith(result["fingerprint"])
        assert store.list_dirs(f"trials/{t['id']}/checkpoints", files=True)  # synced from the scratch copy
    assert not list((tmp_path / "scratch").glob("*/result.json"))  # scratch copies removed once finished
    assert "| finetune" in store.read_text("tables.md") and store.read_json(".orchestrator.lock") is None
    capsys.readouterr()
    assert main([str(sweep), "--results", uri, "--num-cpus", "2"]) == 0
    assert "2 finished earlier (skipped)" in capsys.readouterr().err
    assert main(["status", uri]) == 0
    assert "2 trials: 2 done" in capsys.readouterr().out
    assert main(["report", uri]) == 0

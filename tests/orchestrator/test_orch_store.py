"""The results store as a local path and as a URI (pyarrow's file:// stands in for s3:// etc.)."""

from __future__ import annotations

import pytest

from orchestrator.store import Store
from orchestrator.trainable import TrialFiles


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


def test_trial_files_on_a_uri_store_sync_through_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_SCRATCH", str(tmp_path / "scratch"))
    store = Store(f"file://{tmp_path}/results")
    files = TrialFiles(store, "t1")
    assert files.dir == tmp_path / "scratch" / "t1"
    files.write_json("progress.json", {"task": 0})
    (files.dir / "checkpoints").mkdir()
    (files.dir / "checkpoints" / "task_000.pt").write_bytes(b"x" * 10)
    files.sync()
    assert store.read_json("trials/t1/progress.json") == {"task": 0}
    assert store.read_bytes("trials/t1/checkpoints/task_000.pt") == b"x" * 10
    files.cleanup()
    again = TrialFiles(store, "t1")  # a retry on another node starts from the store's copy
    assert (again.dir / "checkpoints" / "task_000.pt").read_bytes() == b"x" * 10

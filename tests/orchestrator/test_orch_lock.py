"""One orchestrator per results directory; stale locks of dead processes are taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, write_sweep

from orchestrator.cli import main
from orchestrator.errors import LockedError
from orchestrator.lock import ResultsLock, read_lock
from orchestrator.store import LOCK, Store

HOLD = textwrap.dedent(
    """
    import sys, time
    from orchestrator.lock import ResultsLock
    from orchestrator.store import Store
    lock = ResultsLock(Store(sys.argv[1]), command="python -m orchestrator sweeps/x.yaml").acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def _holder(root):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_orchestrator_refuses_while_the_first_runs(tmp_path, capsys):
    root = tmp_path / "results"
    holder = _holder(root)
    try:
        with pytest.raises(LockedError, match=rf"in use by orchestrator pid {holder.pid} on host {socket.gethostname()}"):
            ResultsLock(Store(root)).acquire()
        sweep = write_sweep(tmp_path, "name: t\ngrid: {dataset: [synthetic], scenario: [lt], split: [5, 2], approach: [dgr], seed: [0]}\n")
        code = main([str(sweep), "--results", str(root)])
        err = capsys.readouterr().err
        assert code == 3
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and LOCK in lines[0]
        assert read_lock(Store(root))["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and taken over
    import os

    with ResultsLock(Store(root)):
        assert read_lock(Store(root))["pid"] == os.getpid()
    assert read_lock(Store(root)) is None  # released


def test_stale_lock_content_of_a_dead_pid_is_taken_over(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": time.time(), "command": "x"}))
    with ResultsLock(Store(root)):
        import os

        assert read_lock(Store(root))["pid"] == os.getpid()


def test_lock_of_another_host_is_respected(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    (root / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": time.time(), "command": "x"}))
    with pytest.raises(LockedError, match="on host elsewhere.example .* delete"):
        ResultsLock(Store(root)).acquire()


def test_uri_store_lock_by_content(tmp_path):
    """On a URI store (no flock) the content decides: a live pid on this host holds it."""
    uri = f"file://{tmp_path}/results"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Store(uri).write_json(LOCK, {"pid": sleeper.pid, "host": socket.gethostname(), "started": time.time(), "command": "x"})
        with pytest.raises(LockedError, match=f"pid {sleeper.pid}"):
            ResultsLock(Store(uri)).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with ResultsLock(Store(uri)):
        import os

        assert read_lock(Store(uri))["pid"] == os.getpid()
    assert read_lock(Store(uri)) is None

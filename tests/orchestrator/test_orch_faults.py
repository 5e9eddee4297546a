"""Faults injected into real Ray runs on this machine, and what must survive them.

* A trial's process SIGKILLed in the middle of a task: Ray Tune retries it, the retry
  resumes after the last finished task (that task is not trained again), and the result
  equals an uninterrupted run's.
* A worker node of a multi-node cluster removed while its trial runs: the trial is
  rescheduled on the other node and the sweep completes.
* The embedded Ray listens on 127.0.0.1 only, runs no dashboard, and is always its own
  (never another Ray that runs on this machine).

The killer is external (the test), found through the trial's own files (the start line of
``attempts.jsonl`` holds the pid and the node, cil_core's ``log.jsonl`` one line per finished
epoch): nothing in the sweep or the environment changes, so the trial ids are those of a
normal run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, cmdline, json_lines, kill_leftovers, process_alive, process_tree, wait_for, write_sweep

from orchestrator.sweep import load_sweep
from orchestrator.trials import expand

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]

METRICS = ("acc_matrix", "acc_seen", "avg_incremental_accuracy", "last_accuracy", "task_avg_acc", "per_class_acc", "class_order", "fingerprint")

EPOCHS = 40  # task 1 of synthetic lt 10/3 trains ~2 s on a CPU: a wide window for the kill

KILLED_SWEEP = f"""
name: killed_trial
defaults: {{epochs: {EPOCHS}, device: cpu}}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[10, 3]]
  approach: [dgr]
  seed: [0]
resources: {{gpu: 0, cpu: 1}}
report: {{plots: false}}
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _orchestrator(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m orchestrator ...`` in its own session (its process group is ours to kill),
    output to a file (an orphaned Ray process must not hold a pipe of ours open)."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args], cwd=REPO, env=env or _env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def _starts(folder: Path) -> list[dict]:
    return [a for a in json_lines(folder / "attempts.jsonl") if a.get("event") == "start"]


def test_trial_sigkilled_mid_task_resumes_from_its_last_finished_task(tmp_path):
    sweep = write_sweep(tmp_path, KILLED_SWEEP)
    (spec,) = expand(load_sweep(sweep))
    results = tmp_path / "results"
    folder = results / "trials" / spec.id
    driver = _orchestrator(str(sweep), "--results", str(results), "--num-cpus", "1", "--max-failures", "2", log=tmp_path / "driver.log")
    tree: list[int] = []
    try:

        def training_task_1():
            # task 0 finished (its checkpoint is written before the report), task 1 has run an epoch
            records = json_lines(folder / "log.jsonl")
            return any(r.get("task") == 1 for r in records) and _starts(folder)[-1]

        attempt = wait_for(training_task_1, timeout=400, every=0.02, what="task 1 of the trial to start training")
        pid = int(attempt["pid"])
        assert pid != driver.pid and process_alive(pid)
        tree = process_tree(driver.pid)
        os.kill(pid, signal.SIGKILL)
        killed_at = [r for r in json_lines(folder / "log.jsonl") if r.get("task") == 1]
        assert len(killed_at) < EPOCHS, "the kill came after task 1 had finished training"
        assert not (folder / "checkpoints" / "task_001.pt").exists()

        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        kill_leftovers(tree, group=driver.pid)
    log = (tmp_path / "driver.log").read_text()
    assert f"retry   {spec.id}" in log  # Ray Tune retried it (--max-failures)

    # two attempts: the killed one never recorded its end; the retry finished
    attempts = json_lines(folder / "attempts.jsonl")
    assert [(a["event"], a["attempt"]) for a in attempts] == [("start", 1), ("start", 2), ("end", 2)]
    assert attempts[0]["pid"] == pid and attempts[1]["pid"] != pid and attempts[2]["outcome"] == "finished"
    # the retry restored task 0 from its checkpoint: task 0 was trained once, task 1 again
    epochs = [(r["task"], r["epoch"]) for r in json_lines(folder / "log.jsonl") if r["phase"] != "eval"]
    assert epochs.count((0, 0)) == 1 and sum(1 for t, _ in epochs if t == 0) == EPOCHS
    assert sum(1 for t, _ in epochs if t == 1) == len(killed_at) + EPOCHS
    assert sum(1 for t, _ in epochs if t == 2) == EPOCHS
    assert "resumed after task 0" in (folder / "stderr.log").read_text()
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "finished"

    # the same run, uninterrupted (cil_core's CLI, one thread as Ray gives a 1-CPU trial)
    ref = subprocess.run(
        [sys.executable, "-m", "cil_core", "synthetic", "dgr", "lt", "10", "3", "--seed", "0", "--epochs", str(EPOCHS), "--device", "cpu", "--out", str(tmp_path / "ref"), "--set", "num_workers=1", "-q"],
        cwd=REPO,
        env=_env(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = json.loads((tmp_path / "ref" / "result.json").read_text())
    for key in METRICS:
        assert result[key] == reference[key], key


NODE_SWEEP = """
name: node_lost
defaults: {epochs: 30, device: cpu}
grid:
  dataset: [synthetic]
  scenario: [lt]
  split: [[10, 3]]
  approach: [finetune, dgr]
  seed: [0, 1]
resources: {gpu: 0, cpu: 1}
report: {plots: false}
"""


def test_trials_of_a_removed_node_are_rescheduled_and_the_sweep_completes(tmp_path):
    from ray.cluster_utils import Cluster

    # the head offers no CPU: every trial runs on one of the two 1-CPU worker nodes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, num_gpus=0) for _ in range(2)]
    cluster.wait_for_nodes()
    sweep = write_sweep(tmp_path, NODE_SWEEP)
    trials = expand(load_sweep(sweep))
    results = tmp_path / "results"
    driver = _orchestrator(str(sweep), "--address", cluster.address, "--results", str(results), "--max-failures", "3", log=tmp_path / "driver.log")
    try:

        def training_on_a_worker():
            for spec in trials:
                folder = results / "trials" / spec.id
                events = json_lines(folder / "attempts.jsonl")
                if events and events[-1].get("event") == "start" and any(r.get("task") == 1 for r in json_lines(folder / "log.jsonl")):
                    return spec, events[-1]
            return None

        victim, progress = wait_for(training_on_a_worker, timeout=400, every=0.05, what="a trial training task 1 on a worker node")
        node = next(w for w in workers if w.node_id == progress["node_id"])
        survivor = next(w for w in workers if w is not node)
        cluster.remove_node(node, allow_graceful=False)
        # the trial's worker dies with its node (it must not go on writing beside the retry)
        wait_for(lambda: not process_alive(int(progress["pid"])), timeout=60, what="the removed node's trial process to exit")
        assert driver.wait(timeout=500) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        cluster.shutdown()
    for spec in trials:
        folder = results / "trials" / spec.id
        assert json.loads((folder / "result.json").read_text())["status"] == "finished", spec.id
    folder = results / "trials" / victim.id
    starts = _starts(folder)
    assert len(starts) == 2 and starts[0]["node_id"] == node.node_id and starts[1]["node_id"] == survivor.node_id
    epochs = [(r["task"], r["epoch"]) for r in json_lines(folder / "log.jsonl") if r["phase"] != "eval"]
    assert epochs.count((0, 0)) == 1, "the retry resumes after task 0 (its checkpoint is on the shared results folder)"


# ----------------------------------------------------------------------------- embedded Ray

EMBEDDED = textwrap.dedent(
    """
    import json, os, sys, time
    from orchestrator import cluster
    info = cluster.connect(None, num_cpus=1)  # exactly as a run without --address starts Ray
    import ray

    @ray.remote
    def task():
        return os.getpid()

    @ray.remote
    class Actor:
        def pid(self):
            return os.getpid()

    actor = Actor.remote()  # kept alive while the sockets are listed, like a Tune trial's
    pids = [ray.get(task.remote()), ray.get(actor.pid.remote())]
    time.sleep(8)  # let the node's agents start whatever servers they start
    node = ray._private.worker._global_node
    print(json.dumps({"node_ip": info.node_ip, "session": node.get_session_dir_path(), "webui": node.webui_url,
                      "gcs": node.gcs_address, "workers": pids}), flush=True)
    sys.stdin.readline()
    cluster.shutdown()
    """
)


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """Listening TCP sockets of this machine: inode -> (local address, port), from /proc."""
    import ipaddress

    out = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # per-word host order
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out[fields[9]] = (str(ip), int(hex_port, 16))
    return out


def _sockets_of(pids: set[int], listening: dict[str, tuple[str, int]]) -> list[tuple[int, str, int]]:
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in listening:
                found.append((pid, *listening[link[8:-1]]))
    return sorted(set(found))


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_embedded_ray_binds_127_0_0_1_only_has_no_dashboard_and_is_its_own(tmp_path):
    # A private Ray temp dir whose ray_current_cluster names another (dead) Ray: a plain
    # ray.init() would try to join it; the orchestrator's embedded Ray must start its own.
    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths live below
    (temp / "ray").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    (temp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead}")
    child = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED], cwd=REPO, env=_env(RAY_TMPDIR=str(temp)), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    tree: list[int] = []
    try:
        line = child.stdout.readline()
        assert line, child.stderr.read()[-3000:] if child.poll() is not None else "no reply"
        info = json.loads(line)
        assert info["session"].startswith(str(temp)) and info["gcs"] != f"127.0.0.1:{dead}"  # its own Ray
        assert info["node_ip"] == "127.0.0.1" and info["gcs"].startswith("127.0.0.1:")
        tree = process_tree(child.pid)
        # Ray's processes: the driver's descendants, and anything naming this Ray's temp dir
        pids = set(tree) | {int(p) for p in os.listdir("/proc") if p.isdigit() and str(temp) in cmdline(int(p))}
        assert set(info["workers"]) <= pids
        sockets = _sockets_of(pids, _listening_sockets())
        described = [f"{pid} {cmdline(pid)[:60]} on {ip}:{port}" for pid, ip, port in sockets]
        assert any(port == int(info["gcs"].rsplit(":", 1)[1]) for _, _, port in sockets), described  # the scan sees Ray's GCS
        assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in sockets), described
        # no dashboard: no URL, nothing on its port; Ray still runs its dashboard head process,
        # but minimal (usage stats only), without the web frontend, and (above) listening nowhere
        assert not info["webui"]
        assert all(port != 8265 for _, _, port in sockets), described
        heads = [cmdline(pid) for pid in pids if "dashboard/dashboard.py" in cmdline(pid)]
        assert all("--minimal" in cmd and "--disable-frontend" in cmd for cmd in heads), heads
        child.stdin.write("quit\n")
        child.stdin.flush()
        assert child.wait(timeout=120) == 0, child.stderr.read()[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        kill_leftovers(tree, group=child.pid)
        shutil.rmtree(temp, ignore_errors=True)

"""Where trials run: an embedded Ray on this machine, or an existing cluster.

No ``--address`` (and no ``RAY_ADDRESS``): Ray starts in-process, bound to 127.0.0.1 only and
without the dashboard. ``--address auto`` or ``HOST:PORT`` joins a cluster; one that cannot
be reached is bad input (exit 2), found before anything is submitted. Ray is imported only
inside these functions, never when the orchestrator is imported.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import SweepError
from .trials import TrialSpec

log = logging.getLogger(__name__)

# Read by Ray / Tune in this (driver) process; set before Ray is imported, users may override.
DRIVER_ENV = {"RAY_AIR_NEW_OUTPUT": "0",  # the classic CLIReporter (to stderr), silent at verbose=0 (-q)
              "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep absolute paths; they never rely on the cwd
              "RAY_DEDUP_LOGS": "0"}


@dataclass
class ClusterInfo:
    address: str | None  # None: the embedded local Ray
    node_ip: str
    nodes: list[dict[str, Any]]

    def describe(self) -> str:
        where = "embedded Ray on this machine (127.0.0.1)" if self.address is None else f"Ray cluster at {self.address}"
        cpus, gpus = sum(n["cpu"] for n in self.nodes), sum(n["gpu"] for n in self.nodes)
        return f"{where}: {len(self.nodes)} node(s), {cpus:g} CPUs, {gpus:g} GPUs"


def precheck_address(address: str | None) -> None:
    """``HOST:PORT`` must accept a TCP connection (a wrong address otherwise hangs Ray)."""
    if address is None or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SweepError("--address", address, "expected auto or HOST:PORT (the head node's GCS port, 6379 by default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise SweepError("--address", address, f"cannot reach a Ray head node there ({exc.strerror or exc})") from None


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> ClusterInfo:
    """Start (embedded) or join (address) Ray; return what it offers."""
    for key, value in DRIVER_ENV.items():
        os.environ.setdefault(key, value)
    address = address or os.environ.get("RAY_ADDRESS") or None
    address = None if address == "local" else address  # Ray's word for a new local instance: the embedded one
    if address is None:
        # Ray resolves _node_ip_address="127.0.0.1" to the routable address unless its cluster mode is
        # off: an environment variable read when Ray is imported, so also set on the module if imported.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's node IP is 127.0.0.1, servers bind to it
        if hasattr(constants := sys.modules.get("ray._private.ray_constants"), "ENABLE_RAY_CLUSTER"):
            constants.ENABLE_RAY_CLUSTER = False
    else:
        precheck_address(address)
    import ray

    shutdown()
    common = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level=logging.WARNING)
    if address is None:
        # address="local": always a new Ray of our own. Without it ray.init() joins the Ray
        # that /tmp/ray/ray_current_cluster names (another sweep's, a `ray start` node, ...).
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1", **common)
    else:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            problem = f"cannot join a Ray cluster there: {str(exc).splitlines()[0]}"
            raise SweepError("--address", address, problem) from None
    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    nodes = [{"cpu": float(r.get("CPU", 0)), "gpu": float(r.get("GPU", 0))} for r in alive]
    info = ClusterInfo(address, ray.util.get_node_ip_address(), nodes)
    if address is None and info.node_ip not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the embedded Ray uses node address %s, not 127.0.0.1", info.node_ip)
    return info


def check_resources(trials: Iterable[TrialSpec], nodes: list[dict[str, Any]], where: str) -> None:
    """Every trial's request must fit on at least one node, or the sweep would wait forever."""
    groups: dict[tuple[float, float], list[TrialSpec]] = defaultdict(list)
    for t in trials:
        groups[(float(t.resources.get("cpu", 1)), float(t.resources.get("gpu", 0)))].append(t)
    for (cpu, gpu), members in groups.items():
        if not any(n["cpu"] >= cpu and n["gpu"] >= gpu for n in nodes):
            datasets = ", ".join(sorted({t.dataset for t in members}))
            offered = "; ".join(f"{n['cpu']:g} CPU {n['gpu']:g} GPU" for n in nodes) or "no nodes"
            raise SweepError(where, "resources", f"{len(members)} trial(s) ({datasets}) ask for {gpu:g} GPU and "
                             f"{cpu:g} CPU each, but no node offers that (nodes: {offered}); lower the request (e.g. "
                             "--resources gpu=0,cpu=1) or join a cluster with --address")


def shutdown() -> None:
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()

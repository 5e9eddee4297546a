"""One orchestrator per results directory.

Local (or NFS-mounted) folder: a ``filelock.FileLock`` on ``.orchestrator.flock``, held
for the process's lifetime, so it goes with the process whatever kills it;
``.orchestrator.lock`` beside it names the holder (pid, host, command) for the message and
for ``status``. A holder on another host is respected even if its flock is not visible here
(NFS), until someone deletes that file.

URI store (no lock primitive there): the rule is the file's content. A lock naming a live
pid on this host, or any other host, is respected; a dead pid's is taken over; after
writing ours we read it back and refuse if another orchestrator wrote in between. Two
drivers started within the same instant can still both pass: start one driver per URI store.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any

from filelock import FileLock, Timeout

from .errors import LockedError
from .store import LOCK, Store

log = logging.getLogger(__name__)
FLOCK = ".orchestrator.flock"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_lock(store: Store) -> dict[str, Any] | None:
    """The holder's record, or ``None`` if free."""
    info = store.read_json(LOCK)
    return info if isinstance(info, dict) and info.get("pid") else None


def lock_holder_alive(info: dict[str, Any] | None) -> bool | None:
    """True/False where it can be told (same host), None for another host."""
    if not info:
        return False
    if info.get("host") != socket.gethostname():
        return None
    return pid_alive(int(info["pid"]))


def _describe(info: dict[str, Any] | None, path: str) -> str:
    if not info:
        return f"another orchestrator holds {path}"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (
        f"in use by orchestrator pid {info.get('pid')} on host {info.get('host')} since {started} "
        f"({info.get('command', '?')}); wait for it to finish, or stop it, or if it is gone delete {path}"
    )


class ResultsLock:
    def __init__(self, store: Store, command: str | None = None) -> None:
        self.store = store
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command or " ".join(sys.argv)}
        self._flock: FileLock | None = None

    def _refuse_if_held(self, info: dict[str, Any] | None, flock_held: bool) -> None:
        if not info or info.get("pid") == os.getpid() and info.get("host") == self.record["host"]:
            return
        alive = lock_holder_alive(info)
        if alive is None or (alive and not flock_held):
            raise LockedError(f"{self.store.root}: {_describe(info, self.store.uri(LOCK))}")
        log.info("taking over the stale lock of pid %s on %s (that process is gone)", info["pid"], info.get("host"))

    def acquire(self) -> "ResultsLock":
        if self.store.is_local:
            self.store.mkdir("")
            flock = FileLock(self.store.local(FLOCK))
            try:
                flock.acquire(timeout=0)
            except Timeout:
                raise LockedError(f"{self.store.root}: {_describe(read_lock(self.store), self.store.uri(LOCK))}") from None
            try:
                self._refuse_if_held(read_lock(self.store), flock_held=True)
            except LockedError:
                flock.release()
                raise
            self._flock = flock
            self.store.write_json(LOCK, self.record)
            return self
        self._refuse_if_held(read_lock(self.store), flock_held=False)
        self.store.write_json(LOCK, self.record)
        if read_lock(self.store) != self.record:  # another driver wrote in between
            raise LockedError(f"{self.store.root}: {_describe(read_lock(self.store), self.store.uri(LOCK))}")
        self._flock = None
        return self

    def release(self) -> None:
        if read_lock(self.store) == self.record:
            self.store.delete(LOCK)
        if self._flock is not None:
            self._flock.release()
            self._flock = None

    def __enter__(self) -> "ResultsLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

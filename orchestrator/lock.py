"""One orchestrator per results directory (the second exits 3).

Local (or NFS-mounted) folder: a ``filelock.FileLock`` on ``.orchestrator.flock``, held for the
process's lifetime, so it goes with the process whatever kills it; ``.orchestrator.lock`` beside
it names the holder (pid, host, command) for the message and for ``status``. A holder on
another host is respected even if its flock is not visible here (NFS), until someone deletes
that file. A URI store has no lock primitive: the file's content decides (a live or remote
holder is respected, a dead pid on this host taken over, ours read back after writing), so two
drivers started within the same instant could both pass: start one driver per URI store.
"""

from __future__ import annotations

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
    try:
        os.kill(int(info["pid"]), 0)
    except OSError as exc:
        return isinstance(exc, PermissionError)  # alive, but another user's
    return True


class ResultsLock:
    def __init__(self, store: Store, command: str | None = None) -> None:
        self.store = store
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                       "command": command or " ".join(sys.argv)}
        self._flock = FileLock(store.local(FLOCK)) if store.is_local else None

    def _busy(self) -> LockedError:
        info, path = read_lock(self.store), self.store.uri(LOCK)
        if not info:
            return LockedError(f"{self.store.root}: another orchestrator holds {path}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
        return LockedError(f"{self.store.root}: in use by orchestrator pid {info.get('pid')} on host "
                           f"{info.get('host')} since {started} ({info.get('command', '?')}); wait for it to finish, "
                           f"or stop it, or if it is gone delete {path}")

    def acquire(self) -> "ResultsLock":
        self.store.mkdir("")
        if self._flock is not None:
            try:
                self._flock.acquire(timeout=0)
            except Timeout:
                raise self._busy() from None
        info = read_lock(self.store)
        if info and (info.get("pid"), info.get("host")) != (os.getpid(), self.record["host"]):
            alive = lock_holder_alive(info)
            if alive is None or (alive and self._flock is None):  # a live pid under our flock is not holding it
                self.release()
                raise self._busy()
            log.info("taking over the stale lock of pid %s on %s (that process is gone)", info["pid"], info.get("host"))
        self.store.write_json(LOCK, self.record)
        if self._flock is None and read_lock(self.store) != self.record:  # another driver wrote in between
            raise self._busy()
        return self

    def release(self) -> None:
        if read_lock(self.store) == self.record:
            self.store.delete(LOCK)
        if self._flock is not None:
            self._flock.release()  # a no-op unless held

    __enter__ = acquire

    def __exit__(self, *exc: Any) -> None:
        self.release()

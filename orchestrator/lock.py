"""One orchestrator per results directory: ``.orchestrator.lock`` holds its pid and host.

On a local (or NFS-mounted) directory the lock is an ``flock`` on that file, held for the
process's lifetime, so it disappears with the process whatever kills it; the pid and host
written inside are for the message and for ``status``. Where ``flock`` is unsupported, and
on URI stores, the file's content decides: a lock naming this host and a dead pid is stale
and taken over; a lock naming another host is respected (its message says how to clear it).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from typing import Any

from .errors import LockedError
from .store import LOCK, Store

log = logging.getLogger(__name__)


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
    """The lock's content, or ``None`` if free."""
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
        self.command = command or " ".join(sys.argv)
        self._fd: int | None = None
        self._held = False

    def _content(self) -> bytes:
        return json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": self.command}
        ).encode()

    def acquire(self) -> "ResultsLock":
        if self.store.is_local:
            self._acquire_local()
        else:
            self._acquire_content()
        self._held = True
        return self

    def _acquire_local(self) -> None:
        import fcntl

        path = self.store.local(LOCK)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        flock_ok = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"{self.store.root}: {_describe(read_lock(self.store), str(path))}") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            flock_ok = False  # a file system without flock: decide from the content
        info = read_lock(self.store)
        if info and int(info["pid"]) != os.getpid():
            same_host = info.get("host") == socket.gethostname()
            if not same_host or (not flock_ok and pid_alive(int(info["pid"]))):
                os.close(fd)
                raise LockedError(f"{self.store.root}: {_describe(info, str(path))}")
            log.info("taking over the stale lock of pid %s on %s (that process is gone)", info["pid"], info.get("host"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._content(), 0)
        os.fsync(fd)
        self._fd = fd

    def _acquire_content(self) -> None:
        info = read_lock(self.store)
        if info and int(info["pid"]) != os.getpid():
            alive = lock_holder_alive(info)
            if alive is None or alive:
                raise LockedError(f"{self.store.root}: {_describe(info, self.store.uri(LOCK))}")
            log.info("taking over the stale lock of pid %s on %s", info["pid"], info.get("host"))
        self.store.write_bytes(LOCK, self._content())

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)  # empty = free; the file stays (unlinking races with flock)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        else:
            self.store.delete(LOCK)

    def __enter__(self) -> "ResultsLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

"""Crash-safe file writes shared by the training core and the orchestrator.

A run or a sweep can be killed at any instant (SIGKILL, node loss, a full disk); a reader
(a resumed run, ``orchestrator status``, the tables) must then see either the old file or
the new one, never half of either. Kept free of torch so the orchestrator's driver can
import it without loading the training stack.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write next to ``path``, fsync, and rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """``default`` as in :func:`json.dumps` (the orchestrator passes ``str`` for paths)."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, default=default) + "\n").encode())

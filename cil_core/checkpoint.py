"""Per-task checkpoints: written atomically, verified by checksum, never trusted blindly.

A checkpoint whose bytes do not match its recorded SHA-256 (truncated, corrupted) or that
fails to load is set aside (renamed ``*.corrupt``) and the run falls back to the previous
task's checkpoint, so that task is trained again; a bad file never causes a crash loop.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .results import atomic_write_bytes

log = logging.getLogger(__name__)


def checkpoint_path(out: Path, task: int) -> Path:
    return Path(out) / "checkpoints" / f"task_{task:03d}.pt"


def save_checkpoint(out: Path, task: int, state: dict[str, Any]) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = checkpoint_path(out, task)
    # The checksum goes first: a checkpoint without a matching checksum is never loaded.
    atomic_write_bytes(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
    atomic_write_bytes(path, data)
    return path


def _load_verified(path: Path) -> dict[str, Any] | None:
    sums = path.with_suffix(".sha256")
    try:
        data = path.read_bytes()
        expected = sums.read_text().strip()
    except OSError as exc:
        log.warning("checkpoint %s unreadable (%s)", path, exc)
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        log.warning("checkpoint %s fails its checksum: it will be retrained", path)
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any load failure means "do not trust it"
        log.warning("checkpoint %s does not load (%s): it will be retrained", path, exc)
        return None


def latest_valid_checkpoint(out: Path, config_fingerprint: str) -> dict[str, Any] | None:
    """The newest checkpoint that verifies and belongs to this config, else None."""
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("task_*.pt"), reverse=True):
        state = _load_verified(path)
        if state is None:
            os.replace(path, path.with_name(path.name + ".corrupt"))
            continue
        if state.get("config_fingerprint") != config_fingerprint:
            log.warning("checkpoint %s belongs to another config; ignoring it", path)
            continue
        return state
    return None

"""The results directory (its layout: ``orchestrator/README.md``), as a local path or a URI.

A local path may be any file system every node mounts (NFS, Lustre, ...); a URI is anything
``pyarrow.fs`` (and so Ray Tune's ``storage_path``) accepts: ``s3://``, ``gs://``, ``file://``.
Both go through one ``pyarrow`` file system; local writes are atomic (readers never see half a file).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from pyarrow import fs as pafs

from cil_core.atomic_io import atomic_write_bytes

SWEEP_JSON, LOCK, TRIALS, RAY, PLOTS = "sweep.json", ".orchestrator.lock", "trials", "ray", "plots"
TRIAL_JSON, ATTEMPTS, FAILED_JSON, RESULT_JSON = "trial.json", "attempts.jsonl", "failed.json", "result.json"
STDOUT, STDERR = "stdout.log", "stderr.log"


def trial_rel(trial_id: str, name: str = "") -> str:
    return f"{TRIALS}/{trial_id}/{name}" if name else f"{TRIALS}/{trial_id}"


class Store:
    """A results directory given as a local path or a URI; ``rel`` paths are relative to it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = str(root)
        self.is_local = "://" not in root
        if self.is_local:
            self.root = str(Path(root).expanduser().resolve())
            self._fs, self._base = pafs.LocalFileSystem(), self.root
        else:
            self.root = root.rstrip("/")
            self._fs, self._base = pafs.FileSystem.from_uri(self.root)

    def uri(self, *parts: str) -> str:
        """The path or URI of ``parts`` (what Ray's ``storage_path`` and users see)."""
        return "/".join([self.root, *parts])

    def local(self, *parts: str) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.root} is not a local path")
        return Path(self.root, *parts)

    def _p(self, rel: str) -> str:
        return f"{self._base.rstrip('/')}/{rel}" if rel else self._base

    def exists(self, rel: str) -> bool:
        return self._fs.get_file_info(self._p(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            with self._fs.open_input_stream(self._p(rel)) as fh:
                return fh.read()
        except OSError:
            return None

    def read_text(self, rel: str) -> str | None:
        return None if (data := self.read_bytes(rel)) is None else data.decode("utf-8", errors="replace")

    def read_json(self, rel: str) -> Any:
        """The parsed file, or ``None`` when it is missing or not (yet) valid JSON."""
        try:
            return json.loads(self.read_text(rel) or "")
        except json.JSONDecodeError:
            return None

    def tail(self, rel: str, lines: int = 20) -> list[str]:
        return (self.read_text(rel) or "").rstrip("\n").splitlines()[-lines:]

    def list_dirs(self, rel: str, *, files: bool = False) -> list[str]:
        """The folders in ``rel`` (``files``: the files instead)."""
        kind = pafs.FileType.File if files else pafs.FileType.Directory
        infos = self._fs.get_file_info(pafs.FileSelector(self._p(rel), allow_not_found=True))
        return sorted(info.base_name for info in infos if info.type == kind)

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.is_local:
            return atomic_write_bytes(self.local(rel), data)
        self._fs.create_dir(self._p(rel).rsplit("/", 1)[0], recursive=True)
        with self._fs.open_output_stream(self._p(rel)) as fh:
            fh.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_text(rel, json.dumps(obj, indent=2, default=str) + "\n")

    def mkdir(self, rel: str) -> None:
        self._fs.create_dir(self._p(rel), recursive=True)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(OSError):
            self._fs.delete_file(self._p(rel))

    def upload_file(self, local_file: Path, rel: str) -> None:
        self._fs.create_dir(self._p(rel).rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(local_file), self._p(rel), destination_filesystem=self._fs)

    def download_dir(self, rel: str, local_dir: Path) -> None:
        if self.exists(rel):
            local_dir.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(self._p(rel), str(local_dir), source_filesystem=self._fs)

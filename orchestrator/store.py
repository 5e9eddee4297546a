"""The results directory: its layout, and reading/writing it as a path or a URI.

Layout (``--results DIR``, default ``results/<sweep name>/``)::

    sweep.json               the expanded trials of the last run (what status/report read)
    .orchestrator.lock       pid and host of the orchestrator working here (.orchestrator.flock: its filelock)
    trials/<id>/             one folder per trial (its id: see orchestrator.sweep)
        trial.json           the trial's spec (resolved config, resources, search group)
        attempts.jsonl       one line per attempt: start (pid, host, node), end (outcome)
        failed.json          why the last attempt failed (permanent: never retried)
        stdout.log stderr.log
        config.json log.jsonl checkpoints/ result.json    (written by cil_core)
    tables.md tables.csv tables.tex plots/*.png   (orchestrator report)
    search_<group>.json search.md search.csv      (searches)
    ray/                     Ray Tune's storage_path (experiment state, Ray's trial logs)

A local path may be any file system every node mounts (NFS, Lustre, ...). A URI
(``s3://``, ``gs://``, ``file://`` ... anything ``pyarrow.fs`` and so Ray Tune's
``storage_path`` accept) also works: trials then write to a local scratch folder on their
node and copy it to ``trials/<id>/`` after every task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cil_core.atomic_io import atomic_write_bytes
from cil_core.atomic_io import atomic_write_json as atomic_write_json_

SWEEP_JSON = "sweep.json"
LOCK = ".orchestrator.lock"
TRIALS = "trials"
RAY = "ray"
PLOTS = "plots"

TRIAL_JSON = "trial.json"
ATTEMPTS = "attempts.jsonl"
FAILED_JSON = "failed.json"
RESULT_JSON = "result.json"
STDOUT = "stdout.log"
STDERR = "stderr.log"


def is_uri(root: str) -> bool:
    return "://" in str(root)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_json_(path, obj, default=str)


class Store:
    """A results directory given as a local path or a URI."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = str(root)
        self.is_local = not is_uri(root)
        if self.is_local:
            self.root = str(Path(root).expanduser().resolve())
            self._fs = None
            self._base = self.root
        else:
            from pyarrow import fs as pafs

            self.root = root.rstrip("/")
            self._fs, self._base = pafs.FileSystem.from_uri(self.root)

    # ---------------------------------------------------------------- naming

    def uri(self, *parts: str) -> str:
        """The path or URI of ``parts`` (what Ray's ``storage_path`` and users see)."""
        if self.is_local:
            return str(Path(self.root, *parts))
        return "/".join([self.root, *parts])

    def local(self, *parts: str) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.root} is not a local path")
        return Path(self.root, *parts)

    def _p(self, rel: str) -> str:
        return "/".join([self._base.rstrip("/"), rel]) if rel else self._base

    # ---------------------------------------------------------------- reading

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return self.local(rel).exists()
        from pyarrow import fs as pafs

        return self._fs.get_file_info(self._p(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            if self.is_local:
                return self.local(rel).read_bytes()
            with self._fs.open_input_stream(self._p(rel)) as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError:
            return None

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_json(self, rel: str) -> Any:
        """The parsed file, or ``None`` when it is missing or not (yet) valid JSON."""
        text = self.read_text(rel)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None

    def tail(self, rel: str, lines: int = 20) -> list[str]:
        text = self.read_text(rel)
        if not text:
            return []
        return text.rstrip("\n").splitlines()[-lines:]

    def list_dirs(self, rel: str, *, files: bool = False) -> list[str]:
        """The folders in ``rel`` (``files``: the files instead)."""
        if self.is_local:
            folder = self.local(rel)
            if not folder.is_dir():
                return []
            return sorted(p.name for p in folder.iterdir() if p.is_file() == files)
        from pyarrow import fs as pafs

        kind = pafs.FileType.File if files else pafs.FileType.Directory
        selector = pafs.FileSelector(self._p(rel), allow_not_found=True)
        return sorted(info.base_name for info in self._fs.get_file_info(selector) if info.type == kind)

    # ---------------------------------------------------------------- writing

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.is_local:
            atomic_write_bytes(self.local(rel), data)
            return
        parent = self._p(rel).rsplit("/", 1)[0]
        self._fs.create_dir(parent, recursive=True)
        with self._fs.open_output_stream(self._p(rel)) as fh:
            fh.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_text(rel, json.dumps(obj, indent=2, default=str) + "\n")

    def mkdir(self, rel: str) -> None:
        if self.is_local:
            self.local(rel).mkdir(parents=True, exist_ok=True)
        else:
            self._fs.create_dir(self._p(rel), recursive=True)

    def delete(self, rel: str) -> None:
        try:
            if self.is_local:
                self.local(rel).unlink()
            else:
                self._fs.delete_file(self._p(rel))
        except (FileNotFoundError, OSError):
            pass

    # ---------------------------------------------------------------- syncing (URI stores)

    def upload_file(self, local_file: Path, rel: str) -> None:
        if self.is_local:
            return
        from pyarrow import fs as pafs

        self._fs.create_dir(self._p(rel).rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(local_file), self._p(rel), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self._fs)

    def download_dir(self, rel: str, local_dir: Path) -> bool:
        if self.is_local or not self.exists(rel):
            return False
        from pyarrow import fs as pafs

        local_dir.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self._p(rel), str(local_dir), source_filesystem=self._fs, destination_filesystem=pafs.LocalFileSystem())
        return True


def trial_rel(trial_id: str, name: str = "") -> str:
    return f"{TRIALS}/{trial_id}/{name}" if name else f"{TRIALS}/{trial_id}"

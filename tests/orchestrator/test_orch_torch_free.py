"""The orchestrator imports no torch (and no Ray) to expand, resolve every trial with cil_core, dry-run, report or show status."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO, make_results
from test_orch_report import SWEEP, VALUES


def test_import_dry_run_report_and_status_leave_torch_unimported(tmp_path):
    store = make_results(tmp_path, SWEEP, VALUES)
    code = textwrap.dedent(
        f"""
        import json, sys
        import orchestrator
        from orchestrator import cli, plots, report, schema, status, sweep, tables, trials, tune_runner, trainable
        from orchestrator.cli import main
        rcs = [
            main([{str(REPO / "sweeps" / "paper_table.yaml")!r}, "--dry-run", "--results", {str(tmp_path / "dry")!r}]),
            main(["report", {store.root!r}]),
            main(["status", {store.root!r}]),
        ]
        print(json.dumps({{"rcs": rcs, "heavy": sorted(m for m in ("torch", "ray", "torchvision") if m in sys.modules)}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply == {"rcs": [0, 0, 0], "heavy": []}

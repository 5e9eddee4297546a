"""Every trial is resolved and range-checked before Ray starts: impossible sweeps exit 2 with
one line per distinct problem, and a huge grid's --dry-run stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, write_sweep

from orchestrator.cli import DRY_RUN_ROWS, SAMPLE_ROWS, main

DIGITS = """
name: impossible
defaults: {{epochs: 1, device: cpu}}
grid:
  dataset: [digits]
  scenario: [lt]
  split: {split}
  approach: [finetune, dgr]
  seed: [0, 1]
resources: {{gpu: 0, cpu: 1}}
"""

IMPOSSIBLE = [
    ("split", DIGITS.format(split="[[20, 5]]"), "initial_classes=20 leaves no classes for later tasks: digits has 10 classes"),
    ("epochs", DIGITS.format(split="[[4, 4]]").replace("epochs: 1", "epochs: 0"), "defaults.epochs: epochs must be >= 1, got 0"),
    ("batch_size", DIGITS.format(split="[[4, 4]]").replace("epochs: 1", "epochs: 1, batch_size: 0"), "defaults.batch_size: batch_size must be >= 1, got 0"),
    ("lr", DIGITS.format(split="[[4, 4]]").replace("epochs: 1", "epochs: 1, lr: -0.1"), "defaults.lr: lr must be > 0, got -0.1"),
]


def test_the_four_impossible_sweeps_exit_2_before_ray_starts(tmp_path):
    """Not a dry run: each would start Ray if it passed; none imports Ray (or torch)."""
    paths = {name: write_sweep(tmp_path, text, name=f"{name}.yaml") for name, text, _ in IMPOSSIBLE}
    code = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from orchestrator.cli import main
        out = {{}}
        for name, path in {json.dumps({k: str(v) for k, v in paths.items()})}.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main([path, "--results", path + ".results"])
            out[name] = [rc, err.getvalue()]
        print(json.dumps({{"out": out, "heavy": sorted(m for m in ("ray", "torch") if m in sys.modules)}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply["heavy"] == []
    for name, _, words in IMPOSSIBLE:
        rc, err = reply["out"][name]
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1, (name, err)
        assert lines[0].startswith(f"error: {paths[name]}: ") and words in lines[0], lines[0]
        # a value wrong wherever it is used is named by its sweep key; a combination by its trials
        if "defaults." not in words:
            assert "4 trials: digits lt " in lines[0] and "finetune" in lines[0] and "dgr" in lines[0], lines[0]
        assert not (tmp_path / f"{name}.yaml.results").exists()  # nothing written either


def test_one_line_per_distinct_problem_naming_its_trials(tmp_path, capsys):
    text = """
name: two
defaults: {epochs: 1, device: cpu}
grid:
  dataset: [digits, synthetic]
  scenario: [lt, ltio]
  split: [[15, 5]]
  approach: [finetune]
  seed: [0, 1, 2]
datasets:
  synthetic: {set: {lr_milestones: [5]}}
"""
    code = main([str(write_sweep(tmp_path, text)), "--dry-run"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 2, err
    assert "initial_classes=15 leaves no classes" in err[0] and "(6 trials: digits lt 15/5 finetune, digits ltio 15/5 finetune)" in err[0]
    assert "a 1-epoch run has no later epoch to lower the lr at" in err[1] and "(6 trials: synthetic lt 15/5 finetune, synthetic ltio 15/5 finetune)" in err[1]


def test_negative_seed_and_negative_max_failures_are_refused(tmp_path, capsys):
    path = write_sweep(tmp_path, DIGITS.format(split="[[4, 4]]").replace("seed: [0, 1]", "seed: [0, -1]"))
    assert main([str(path), "--dry-run"]) == 2
    assert "grid.seed.1: Input should be greater than or equal to 0" in capsys.readouterr().err
    path = write_sweep(tmp_path, DIGITS.format(split="[[4, 4]]"), name="ok.yaml")
    assert main([str(path), "--max-failures", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --max-failures: must be >= 0 (retries of a failed trial), got -1"]


def _million(tmp_path):
    splits = [[i, t] for i in range(1, 10) for t in range(2, 12 - i)][:24]
    approaches = ["bic", "dgr", "eeil", "finetune", "icarl", "joint", "lucir", "lwf", "podnet", "eeil_2stage", "lucir_2stage", "podnet_2stage", "lucir_gvalign", "podnet_gvalign"]
    text = f"""
name: million
defaults: {{epochs: 1, device: cpu}}
grid:
  dataset: [digits]
  scenario: [conv, lt, ltio]
  split: {splits}
  approach: [{', '.join(approaches)}]
  seed: [{', '.join(str(s) for s in range(1000))}]
resources: {{gpu: 0, cpu: 1}}
"""
    return write_sweep(tmp_path, text), 3 * 24 * 14 * 1000


@pytest.mark.slow
def test_million_trial_dry_run_prints_counts_and_a_sample(tmp_path, capsys):
    """1,008,000 trials: every one resolved (once per config-without-seed) and counted; the
    output is the first and last rows, the counts and the cost, not a million lines."""
    path, total = _million(tmp_path)
    assert main([str(path), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) < 2 * SAMPLE_ROWS + 20 and len(out) < 20_000
    assert f"sweep million: {total} trials" in out
    assert f"... {total - 2 * SAMPLE_ROWS} more trials ..." in out
    assert "  scenario  conv 336000, lt 336000, ltio 336000  (3 values)" in out
    assert "(1000 values)" in out and "(14 values)" in out and "(24 values)" in out
    assert lines[1].split()[:2] == ["1", "bic_digits_conv_1-2_s0_" + lines[1].split()[1].rsplit("_", 1)[1]]
    assert lines[2 * SAMPLE_ROWS + 1].split()[0] == str(total)
    assert f"(0 of {total} already finished)" in out
    assert DRY_RUN_ROWS < total

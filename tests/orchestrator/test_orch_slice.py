"""``--only``: a slice of a sweep runs, the rest stays in the sweep (and its tables) for later."""

from __future__ import annotations

import json

import pytest
from conftest import write_sweep

from orchestrator.cli import main
from orchestrator.errors import SweepError
from orchestrator.trials import parse_only, select
from orchestrator.sweep import load_sweep
from orchestrator.trials import expand

SWEEP = """
name: slice
defaults: {epochs: 1, device: cpu}
grid:
  dataset: [synthetic]
  scenario: [lt, ltio]
  split: [[10, 2], [5, 4]]
  approach: [finetune, dgr]
  seed: [0, 1, 2]
resources: {gpu: 0, cpu: 1}
report: {plots: false}
"""


def test_parse_and_select_by_every_axis(tmp_path):
    trials = expand(load_sweep(write_sweep(tmp_path, SWEEP)))
    assert len(trials) == 24
    assert parse_only(["split=10/2,5-4", "seed=0"]) == {"split": {"10/2", "5/4"}, "seed": {"0"}}
    chosen = select(trials, parse_only(["seed=0", "split=10/2", "approach=dgr"]))
    assert [(t.config["scenario"], t.config["seed"], t.variant) for t in chosen] == [("lt", 0, "dgr"), ("ltio", 0, "dgr")]
    assert len(select(trials, parse_only(["scenario=ltio"]))) == 12
    assert select(trials, {}) == trials


@pytest.mark.parametrize(
    "items, fragment",
    [(["sed=0"], "--only: sed: unknown axis"), (["split=20,5"], "INITIAL/TASKS"), (["seed"], "expected AXIS=V1,V2"), (["seed=7"], "seed=7 matches none of the sweep's 24 trials (the sweep has seed: 0, 1, 2)")],
)
def test_bad_slices_are_refused(tmp_path, items, fragment):
    trials = expand(load_sweep(write_sweep(tmp_path, SWEEP)))
    with pytest.raises(SweepError) as err:
        select(trials, parse_only(items))
    assert fragment in str(err.value)


def test_dry_run_lists_only_the_slice(tmp_path, capsys):
    path = write_sweep(tmp_path, SWEEP)
    code = main([str(path), "--dry-run", "--results", str(tmp_path / "r"), "--only", "seed=1", "--only", "approach=finetune"])
    out = capsys.readouterr().out
    assert code == 0
    assert "sweep slice: 4 trials" in out and "seed      1 4" in out
    code = main([str(path), "--dry-run", "--only", "seed=9"])
    assert code == 2 and "matches none" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ray
def test_slice_runs_only_its_trials_and_tables_keep_the_sweep(tmp_path, capsys):
    path = write_sweep(tmp_path, SWEEP.replace("seed: [0, 1, 2]", "seed: [0, 1]").replace("split: [[10, 2], [5, 4]]", "split: [[10, 2]]").replace("scenario: [lt, ltio]", "scenario: [lt]"))
    results = tmp_path / "r"
    code = main([str(path), "--results", str(results), "--num-cpus", "2", "--only", "seed=0", "-q"])
    assert code == 0  # the trials outside the slice are not failures
    trials = json.loads((results / "sweep.json").read_text())["trials"]
    assert len(trials) == 4  # the whole sweep, for status and the tables
    finished = sorted(t["id"].split("_")[0] + "_s" + str(t["config"]["seed"]) for t in trials if (results / "trials" / t["id"] / "result.json").exists())
    assert finished == ["dgr_s0", "finetune_s0"]
    tables = (results / "tables.md").read_text()
    assert "1 of 2 seeds" in tables or "(1/2)" in tables, tables


def test_closing_line_of_a_slice_does_not_claim_the_whole_sweep(tmp_path):
    from orchestrator.cli import finished_line
    from orchestrator.status import TrialStatus

    trials = expand(load_sweep(write_sweep(tmp_path, SWEEP)))
    wanted = select(trials, parse_only(["seed=0"]))
    ids = {t.id for t in wanted}
    statuses = [TrialStatus(spec=t, state="done" if t.id in ids else "pending") for t in trials]
    assert finished_line(statuses, None) == f"all {len(trials)} trials finished"
    line = finished_line(statuses, ids)
    assert line == f"all {len(ids)} trials of the --only slice finished; {len(trials) - len(ids)} of the sweep's {len(trials)} are left for later"
    everything = [TrialStatus(spec=t, state="done") for t in trials]
    assert finished_line(everything, ids).endswith("; the whole sweep is done")

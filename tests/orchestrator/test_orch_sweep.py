"""Expansion: stable content-hash ids, precedence, include/exclude, the paper grid's dry-run."""

from __future__ import annotations

import re

from conftest import REPO

from orchestrator.cli import main
from orchestrator.sweep import axis_counts, canonical_json, expand, load_sweep, load_sweep_text, trial_id

BASE = """
name: t
defaults: {epochs: 1, lr: 0.1, device: cpu, dgr.kd_base: 0.5}
grid:
  dataset: [synthetic, digits]
  scenario: [lt, ltio]
  split: [[5, 2], [10, 2]]
  approach: [dgr, finetune, {name: dgr-noDAKD, approach: dgr, set: {dgr.dakd: false}}]
  seed: [0, 1]
"""


def test_ids_are_content_hashes_of_the_semantic_config():
    config = {"dataset": "synthetic", "approach": "dgr", "scenario": "lt", "initial_classes": 5, "total_tasks": 2, "seed": 0, "lr": 0.1}
    tid = trial_id(config)
    assert re.fullmatch(r"dgr_synthetic_lt_5-2_s0_[0-9a-f]{10}", tid)
    # key order, option spelling, integral floats and non-semantic keys do not matter
    same = {"lr": 0.1, "seed": 0, "total_tasks": 2.0, "initial_classes": 5, "scenario": "lt", "approach": "dgr", "dataset": "synthetic"}
    assert trial_id({**same, "out": "/x", "data_root": "/d", "device": "cuda", "num_workers": 4}) == tid
    assert trial_id({**config, "dgr.dakd": False}) == trial_id({**config, "options": {"dgr": {"dakd": False}}})
    assert trial_id({**config, "finetune.x": 1}) == tid  # another approach's option does nothing
    # anything that changes the computation changes the id
    for change in ({"lr": 0.05}, {"seed": 1}, {"dgr.dakd": False}, {"epochs": 3}):
        assert trial_id({**config, **change}) != tid
    assert "out" not in canonical_json({**config, "out": "/x"})


def test_expansion_is_stable_and_ordered():
    sweep = load_sweep_text(BASE, "x.yaml")
    a, b = expand(sweep), expand(load_sweep_text(BASE, "y.yaml"))
    assert [t.id for t in a] == [t.id for t in b]
    assert len(a) == 2 * 2 * 2 * 3 * 2
    assert len({t.id for t in a}) == len(a)
    assert [t.row for t in a[:6:2]] == ["dgr", "finetune", "dgr-noDAKD"]
    first = a[0]
    assert first.config["options"] == {"dgr": {"kd_base": 0.5}}
    variant = next(t for t in a if t.row == "dgr-noDAKD")
    assert variant.config["options"] == {"dgr": {"dakd": False, "kd_base": 0.5}}
    finetune = next(t for t in a if t.row == "finetune")
    assert "options" not in finetune.config  # dgr's option is dropped for finetune


def test_precedence_and_resources_and_hours():
    text = BASE + """
datasets:
  digits: {set: {lr: 0.2, epochs: 2}, resources: {gpu: 0.5}, hours: 1.0}
approaches:
  dgr: {set: {lr: 0.3}, resources: {cpu: 2}, hours_factor: 2}
overrides:
  - match: {dataset: digits, approach: finetune, seed: 1}
    set: {lr: 0.4}
resources: {gpu: 0, cpu: 1}
"""
    trials = expand(load_sweep_text(text, "x.yaml"), set_values={"epochs": 5, "data_root": "rel/dir"})
    pick = {(t.dataset, t.row, t.seed, t.scenario, t.split): t for t in trials}
    t = pick[("digits", "dgr", 0, "lt", (5, 2))]
    assert t.config["lr"] == 0.3 and t.config["epochs"] == 5  # approach > data set; --set > all
    assert t.resources == {"gpu": 0.5, "cpu": 2.0} and t.hours == 2.0
    assert t.config["data_root"].startswith("/") and t.config["data_root"].endswith("rel/dir")  # absolute
    assert pick[("digits", "finetune", 1, "lt", (5, 2))].config["lr"] == 0.4
    assert pick[("digits", "finetune", 0, "lt", (5, 2))].config["lr"] == 0.2
    s = pick[("synthetic", "finetune", 0, "lt", (5, 2))]
    assert s.config["lr"] == 0.1 and s.resources == {"gpu": 0.0, "cpu": 1.0} and s.hours is None


def test_exclude_and_include():
    text = BASE + """
exclude:
  - {dataset: digits, split: [10, 2]}
  - {approach: dgr-noDAKD, scenario: ltio}
include:
  - {dataset: digits, scenario: lt, split: [[4, 4]], approach: [finetune]}
"""
    trials = expand(load_sweep_text(text, "x.yaml"))
    keys = {(t.dataset, t.scenario, t.split, t.row) for t in trials}
    assert ("digits", "lt", (10, 2), "dgr") not in keys
    assert ("synthetic", "ltio", (5, 2), "dgr-noDAKD") not in keys
    assert ("synthetic", "lt", (5, 2), "dgr-noDAKD") in keys
    assert ("digits", "lt", (4, 4), "finetune") in keys and ("digits", "lt", (4, 4), "dgr") not in keys
    assert sum(1 for t in trials if t.split == (4, 4)) == 2  # both seeds


def test_paper_table_dry_run_lists_every_trial_with_counts_per_axis(capsys):
    """The paper's grid: 4 data sets, conv/lt/ltio, LFS and LFH splits, 12 approaches (DGR and its
    11 baselines) everywhere, GVAlign on LUCIR and PODNet on CIFAR-100 lt/ltio only, 3 seeds (validated against cil_core's registry
    in a child process)."""
    path = REPO / "sweeps" / "paper_table.yaml"
    code = main([str(path), "--dry-run", "--results", "/nonexistent/results"])
    out = capsys.readouterr().out
    assert code == 0
    trials = expand(load_sweep(path))
    counts = axis_counts(trials)
    assert counts["dataset"] == {"cifar100": 600, "imagenet_subset": 540, "Food101": 360, "imagenet_1000": 216}
    assert counts["scenario"] == {"conv": 432, "lt": 642, "ltio": 642}
    assert counts["seed"] == {0: 572, 1: 572, 2: 572}
    assert len(counts["approach"]) == 14
    assert counts["approach"]["lucir_gvalign"] == counts["approach"]["podnet_gvalign"] == 30  # 2 scenarios x 5 splits x 3 seeds
    assert set(counts["approach"].values()) == {138, 30}
    assert all(t.dataset == "cifar100" and t.scenario != "conv" for t in trials if t.approach.endswith("_gvalign"))
    assert {"5 20", "10 10", "20 5", "50 6", "50 11", "51 6", "51 11"} <= set(counts["split"])
    assert not any(t.dataset == "Food101" and (t.scenario == "conv" or t.split[0] == 50) for t in trials)
    assert f"sweep paper_table: {len(trials)} trials" in out
    assert "  dataset   cifar100 600, imagenet_subset 540, Food101 360, imagenet_1000 216  (4 values)" in out
    assert "  seed      0 572, 1 572, 2 572  (3 values)" in out
    assert re.search(r"estimated cost: [\d.]+ GPU hours", out)
    for t in trials[:3] + trials[-3:]:
        assert t.id in out
    assert len([line for line in out.splitlines() if "to run" in line]) == len(trials)


def test_other_sweep_files_expand(capsys, tmp_path):
    counts = {
        "quickstart": 144,
        "tinyimagenet_lt": 144,
        "tinyimagenet_dgr_vs_finetune": 24,
        "tinyimagenet_ltio_long": 6,
        "tinyimagenet_dgr_ablation": 28,
        "search_dgr": 1,
        "paper_table": 1716,
    }
    shipped = {path.stem for path in (REPO / "sweeps").glob("*.yaml")}
    assert shipped == set(counts), "every shipped sweep file must be expanded by this test"
    expanded = {}
    for name, count in counts.items():
        sweep = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        trials = expand(sweep, set_values={"data_root": str(tmp_path)} if sweep.requires else None)
        assert len(trials) == count, name
        expanded[name] = trials
    ablation = {t.row: t for t in expanded["tinyimagenet_dgr_ablation"] if t.scenario == "ltio"}
    assert ablation["dgr-noDAKD"].config["options"] == {"dgr": {"dakd": False}}
    assert ablation["dgr-kd0.07"].config["options"] == {"dgr": {"kd_base": 0.07}}
    assert "options" not in ablation["dgr"].config
    assert len({t.id for t in expanded["tinyimagenet_dgr_ablation"]}) == 28
    assert {t.resources["gpu"] for t in expanded["quickstart"]} == {0.0}
    search = load_sweep(REPO / "sweeps" / "search_dgr.yaml").search
    assert search is not None and set(search.space) == {"dgr.kd_base", "lr"} and search.searcher == "optuna"
    code = main([str(REPO / "sweeps" / "search_dgr.yaml"), "--dry-run", "--skip-cil-check", "--results", str(tmp_path / "r")])
    assert code == 0 and "x 24 samples (optuna search over dgr.kd_base, lr)" in capsys.readouterr().out

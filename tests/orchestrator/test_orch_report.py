"""Tables from hand-written result.json files: mean ± std, bold best, seeds marker, paper diff, --check."""

from __future__ import annotations

import csv
import io
import os

from conftest import make_results

from orchestrator.cli import main
from orchestrator.report import build_report

SWEEP = """
name: table_test
grid:
  dataset: [cifar100]
  scenario: [lt]
  split: [[5, 20], [50, 6]]
  approach: [dgr, finetune]
  seed: [0, 1, 2]
"""

VALUES = {
    # dgr 5/20: paper 34.35 (avg inc acc)
    ("dgr", "cifar100", "lt", 5, 20, 0): (34.0, 25.0),
    ("dgr", "cifar100", "lt", 5, 20, 1): (35.0, 26.0),
    ("dgr", "cifar100", "lt", 5, 20, 2): (36.0, 27.0),
    # finetune 5/20: only 2 of 3 seeds finished
    ("finetune", "cifar100", "lt", 5, 20, 0): (20.0, 10.0),
    ("finetune", "cifar100", "lt", 5, 20, 1): (21.0, 11.0),
    # dgr 50/6: paper 40.18 (avg), re-run last 34.54
    ("dgr", "cifar100", "lt", 50, 6, 0): (40.0, 34.0),
    ("dgr", "cifar100", "lt", 50, 6, 1): (41.0, 35.0),
    ("dgr", "cifar100", "lt", 50, 6, 2): (42.0, 36.0),
    ("finetune", "cifar100", "lt", 50, 6, 0): (45.0, 40.0),  # finetune best here (1 seed)
}


def test_tables_mean_std_bold_seeds_and_paper(tmp_path, capsys):
    store = make_results(tmp_path, SWEEP, VALUES)
    code = main(["report", store.root])
    out = capsys.readouterr().out
    assert code == 0
    md = store.local("tables.md").read_text()
    assert out.strip().startswith("# table_test: results")
    assert "9 of 12 trials finished" in md
    lines = md.splitlines()
    avg_header = lines.index("## Average incremental accuracy (%) — cifar100")
    last_header = lines.index("## Last accuracy (%) — cifar100")
    assert avg_header < last_header
    avg = "\n".join(lines[avg_header:last_header])
    last = "\n".join(lines[last_header:])
    assert "| approach | lt 5/20 | lt 50/6 |" in avg
    # mean ± sample std, best bold, the paper's value and our difference
    assert "| dgr | **35.00 ± 1.00** [paper 34.35, Δ +0.65] | 41.00 ± 1.00 [paper 40.18, Δ +0.82; re-run 40.18, Δ +0.82] |" in avg
    # fewer seeds than asked: marked; a single seed has no std; the best of its column is bold
    assert "| finetune | 20.50 ± 0.71 (2/3) | **45.00** (1/3) |" in avg
    # last accuracy is compared with the re-run's last accuracy, never with an average
    assert "| dgr | **26.00 ± 1.00** | 35.00 ± 1.00 [re-run 34.54, Δ +0.46] |" in last
    assert "34.35" not in last.split("## Comparison")[0]
    # comparison section: every published number of these cells, labelled by metric
    assert "| cifar100 | lt | 5/20 | dgr | average incremental accuracy | avg_incremental_accuracy | 34.35 | 35.00 | +0.65 | 2.0 | ok |" in md
    assert "| cifar100 | lt | 50/6 | dgr | last accuracy | last_accuracy_rerun | 34.54 | 35.00 | +0.46 | 3.0 | ok |" in md
    assert "| cifar100 | lt | 50/6 | lucir |" not in md  # not an approach of this sweep

    rows = list(csv.DictReader(io.StringIO(store.local("tables.csv").read_text())))
    cell = next(r for r in rows if r["table"] == "avg_incremental_accuracy" and r["approach"] == "dgr" and r["split"] == "50/6")
    assert (cell["mean"], cell["std"], cell["seeds_finished"], cell["seeds_asked"]) == ("41.0", "1.0", "3", "3")
    assert (cell["paper_value"], cell["paper_diff"], cell["rerun_value"]) == ("40.18", "0.82", "40.18")
    assert cell["metric_label"] == "average incremental accuracy"
    tex = store.local("tables.tex").read_text()
    assert "\\mathbf{35.00 \\pm 1.00}" in tex and "{\\scriptsize(34.35)}" in tex and "$^{2/3}$" in tex
    assert "\\begin{tabular}" in tex and tex.count("\\begin{table}") == 2

    # plots: one accuracy curve and one shot-bar chart per column, valid PNGs
    for name in ("curves_cifar100_lt_5-20.png", "shots_cifar100_lt_5-20.png", "curves_cifar100_lt_50-6.png"):
        data = store.local("plots", name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_check_passes_within_tolerance_and_fails_outside(tmp_path, capsys):
    store = make_results(tmp_path / "ok", SWEEP, VALUES)
    assert main(["report", store.root, "--check", "--no-plots"]) == 0
    assert "within tolerance" in capsys.readouterr().err
    bad = dict(VALUES)
    for seed in range(3):  # last accuracy far below the re-run's 34.54 (tolerance 3.0)
        avg, _ = bad[("dgr", "cifar100", "lt", 50, 6, seed)]
        bad[("dgr", "cifar100", "lt", 50, 6, seed)] = (avg, 30.0)
    store = make_results(tmp_path / "bad", SWEEP, bad)
    assert main(["report", store.root, "--check", "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert "1 of 4 finished cells outside their tolerance" in err
    assert "cifar100 lt 50/6 dgr: last_accuracy ours 30.00 vs last_accuracy_rerun 34.54 (Δ -4.54, tolerance 3.0)" in err
    assert "| OUTSIDE |" in store.local("tables.md").read_text()


def test_report_with_nothing_finished_and_unfinished_cells(tmp_path, capsys):
    store = make_results(tmp_path, SWEEP, {})
    out = build_report(store)
    assert "0 of 12 trials finished" in out.text
    assert "| dgr | (0/3) [paper 34.35] |" in out.text
    assert all(c["verdict"] in ("not finished",) for c in out.checks)
    assert main(["report", store.root, "--check", "--no-plots"]) == 0  # nothing finished: nothing outside
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_result_files_are_read_as_json_only(tmp_path, capsys):
    """result.json (and every other file a trial writes) is parsed with json.loads only: a
    file holding a pickle or a YAML object tag is an unfinished trial, never executed."""
    import pickle

    from orchestrator.store import trial_rel
    from orchestrator.sweep import load_sweep_text
    from orchestrator.trials import expand

    marker = tmp_path / "executed"
    store = make_results(tmp_path, SWEEP, VALUES)
    specs = expand(load_sweep_text(SWEEP, "x.yaml"))
    dgr0 = next(s for s in specs if (s.variant, s.split, s.seed) == ("dgr", (5, 20), 0))
    dgr1 = next(s for s in specs if (s.variant, s.split, s.seed) == ("dgr", (5, 20), 1))

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    store.write_bytes(trial_rel(dgr0.id, "result.json"), pickle.dumps(Payload()))
    store.write_text(trial_rel(dgr1.id, "result.json"), f"!!python/object/apply:os.system ['touch {marker}']\n")
    store.write_text(trial_rel(dgr1.id, "progress.json"), f"!!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["status", store.root]) == 0
    out = capsys.readouterr().out
    assert "7 done" in out
    assert main(["report", store.root]) == 0
    capsys.readouterr()
    assert "7 of 12 trials finished" in store.local("tables.md").read_text()
    assert "| dgr | **36.00** (1/3) [paper 34.35" in store.local("tables.md").read_text()  # only seed 2 counts
    assert not marker.exists()

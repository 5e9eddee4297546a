"""Bad sweep files fail before Ray starts: exit 2 and one line naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, write_sweep

from orchestrator.cli import main
from cil_core.config import parse_set_items
from orchestrator.errors import SweepError
from orchestrator.sweep import load_sweep_text, parse_resources
from orchestrator.trials import expand

GOOD = """
name: t
grid:
  dataset: [synthetic]
  scenario: [lt, ltio]
  split: [[5, 2], "10 2"]
  approach: [dgr, finetune]
  seed: [0, 1]
"""


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    "text, key, words",
    [
        (GOOD + "gird: {}\n", "gird", "unknown key"),
        (GOOD.replace("  seed: [0, 1]", "  seed: [0, 1]\n  seeds: [2]"), "grid.seeds", "unknown key"),
        (GOOD + "datasets:\n  synthetic: {hours: 1, gpu: 1}\n", "datasets.synthetic.gpu", "unknown key"),
        (GOOD.replace("seed: [0, 1]", "seed: [zero]"), "grid.seed.0", "integer"),
        (GOOD.replace("seed: [0, 1]", "seed: [0, -1]"), "grid.seed.1", "greater than or equal to 0"),
        (GOOD + "resources: {gpu: lots}\n", "resources.gpu", "number"),
        (GOOD + "resources: {gpu: 1.5}\n", "resources.gpu", "whole number"),
        (GOOD.replace("split: [[5, 2], \"10 2\"]", "split: [[5, 2, 3]]"), "grid.split.0", "split"),
        (GOOD.replace("dataset: [synthetic]", "dataset: []"), "grid.dataset", "empty"),
        (GOOD.replace("approach: [dgr, finetune]", "approach: []"), "grid.approach", "empty"),
        ("name: t\n", "grid", "missing"),
        ("name: t\ngrid: {}\n", "grid", "is empty"),
        ("name: t\ngrid:\n", "grid", "is empty"),
        (GOOD + "exclude:\n  - {scenario: [lt, ltio]}\n", "exclude", "0 trials"),
        (GOOD + "defaults: {seed: 3}\n", "defaults", "grid axis"),
        (GOOD + "defaults: {out: /tmp/x}\n", "defaults", "orchestrator"),
        (GOOD + "search: {num_samples: 2, space: {lr: {uniform: [1, 0.1]}}}\n", "search.space.lr", "lower bound"),
        (GOOD + "search: {num_samples: 2, metric: accuracy, space: {lr: {uniform: [0.01, 0.1]}}}\n", "search.metric", "choose one of"),
        (GOOD + "approaches: {dgrr: {hours_factor: 2}}\n", "approaches.dgrr", "not an approach of the grid"),
        ("name: t\ngrid: [1, 2]\n", "grid", "valid dictionary"),
        ("name: t\ngrid: {dataset: [a]\n", "line", "not valid YAML"),
    ],
)
def test_bad_sweep_exits_2_with_one_line_naming_file_and_key(tmp_path, capsys, text, key, words):
    path = write_sweep(tmp_path, text)
    code, out, err = run_cli(capsys, str(path), "--dry-run")
    assert code == 2
    line = one_error_line(err)
    assert line.startswith(f"error: {path}: {key}"), line
    assert words in line, line
    assert out == ""


def test_yaml_is_never_evaluated_as_code(tmp_path, capsys):
    marker = tmp_path / "executed"
    text = GOOD + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(SweepError, match="not valid YAML"):
        load_sweep_text(text, "x.yaml")
    # through the command line too: bad input (exit 2), nothing run
    code, _, err = run_cli(capsys, str(write_sweep(tmp_path, text)), "--dry-run")
    assert code == 2 and "not valid YAML" in one_error_line(err)
    # a --set value is read with the safe loader as well: a tag stays a plain string
    tagged = f"!!python/object/apply:os.system ['touch {marker}']"
    assert parse_set_items([f"lr={tagged}"]) == {"lr": tagged}
    assert not marker.exists()


def test_options_are_checked_by_cil_core_itself(tmp_path, capsys):
    """Unknown or mistyped training options, wherever they are written, name their block and
    key; the check runs cil_core in a child process (this one stays torch-free)."""
    path = write_sweep(tmp_path, GOOD + "defaults: {epochs: 1}\ndatasets:\n  synthetic:\n    set: {lrr: 0.1, batch_size: many}\n")
    code, out, err = run_cli(capsys, str(path), "--dry-run")
    assert code == 2
    line = one_error_line(err)
    assert line.startswith(f"error: {path}: datasets.synthetic.set.lrr: unknown option 'lrr'"), line
    path = write_sweep(tmp_path, GOOD + "defaults: {epochs: many}\n", name="typed.yaml")
    code, out, err = run_cli(capsys, str(path), "--dry-run", "--set", "dgr.kd_base=0.5")
    assert code == 2
    line = one_error_line(err)
    assert line.startswith(f"error: {path}: defaults.epochs: epochs: expected an integer"), line


def test_unknown_set_option_and_unknown_approach(tmp_path, capsys):
    path = write_sweep(tmp_path, GOOD.replace("[dgr, finetune]", "[dgr, nosuchmethod]"))
    code, out, err = run_cli(capsys, str(path), "--set", "epochs=1")
    assert code == 2
    assert "grid.approach: cil_core has no approach 'nosuchmethod'" in one_error_line(err)
    path = write_sweep(tmp_path, GOOD, name="ok.yaml")
    code, out, err = run_cli(capsys, str(path), "--dry-run", "--set", "dgr.nosuch=1")
    assert code == 2
    assert one_error_line(err).startswith("error: --set: dgr.nosuch: unknown option dgr.nosuch")


def test_bad_flags_are_bad_input(tmp_path, capsys):
    path = write_sweep(tmp_path, GOOD)
    code, _, err = run_cli(capsys, str(path), "--dry-run", "--set", "epochs")
    assert code == 2 and "--set: 'epochs': expected KEY=VALUE" in one_error_line(err)
    code, _, err = run_cli(capsys, str(path), "--dry-run", "--resources", "gpu=-1")
    assert code == 2 and "--resources: gpu" in one_error_line(err)
    code, _, err = run_cli(capsys, str(tmp_path / "missing.yaml"), "--dry-run")
    assert code == 2 and "no such sweep file" in one_error_line(err)
    req = write_sweep(tmp_path, GOOD + "requires: [data_root]\n", name="req.yaml")
    code, _, err = run_cli(capsys, str(req), "--dry-run")
    assert code == 2 and one_error_line(err).startswith(f"error: {req}: requires.data_root: give it on the command line")


def test_unreachable_address_is_bad_input(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_sweep(tmp_path, GOOD)
    code, _, err = run_cli(capsys, str(path), "--results", str(tmp_path / "r"), "--address", f"127.0.0.1:{port}")
    assert code == 2
    assert one_error_line(err).startswith(f"error: --address: 127.0.0.1:{port}: cannot reach a Ray head node there")


def test_failing_sweep_never_imports_ray(tmp_path):
    path = write_sweep(tmp_path, GOOD + "gird: 1\n")
    code = textwrap.dedent(
        f"""
        import sys
        from orchestrator.cli import main
        rc = main([{str(path)!r}])
        assert rc == 2, rc
        assert "ray" not in sys.modules and "torch" not in sys.modules, sorted(m for m in sys.modules if m in ("ray", "torch"))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_parse_helpers():
    """--set values are typed by cil_core with the rest of the trial's options."""
    values = parse_set_items(["lr=0.05", "dgr.dakd=false", "epochs=8", "lr_milestones=[3, 5]", "data_root=/d/1e3"])
    assert values["data_root"] == "/d/1e3"  # a path stays a string
    del values["data_root"]  # (the sweep's synthetic data set reads no folder: refused)
    config = expand(load_sweep_text(GOOD, "x.yaml"), set_values=values)[0].config
    assert (config["lr"], config["lr_milestones"]) == (0.05, [3, 5])
    assert config["options"]["dgr"]["dakd"] is False
    assert parse_resources("gpu=0.5,cpu=2") == {"gpu": 0.5, "cpu": 2.0}


def test_yaml_scientific_notation_is_a_number():
    sweep = load_sweep_text(GOOD + "defaults: {lr: 1e-3}\n", "x.yaml")
    assert expand(sweep)[0].config["lr"] == 0.001

"""`python -m cil_core` refuses bad input before training: exit 2, one line naming the fix.

Each case calls the CLI's ``main`` in-process (the same code path as the console) and
checks: the exit status, that stderr is exactly one ``error:`` line, that nothing trained
(the Learner is replaced by one that fails the test if it is ever constructed), and that the
``--out`` folder is exactly as before (nothing written). The cases of the table
:data:`REFUSED` then run the corrected command in the same ``--out`` to the end: a refused
command never costs the run its folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cil_core import experiment
from cil_core.cli import main

# A tiny valid run: 2 tasks of the synthetic set, 1 epoch each (a few seconds on a CPU).
SYNTHETIC = ["synthetic", "finetune", "lt", "10", "2", "--device", "cpu", "--epochs", "1", "-q"]


def _training_started(**kwargs):
    raise AssertionError("a refused command constructed the Learner: training started")


def snapshot(path: Path):
    """What lies at ``path``: None, a file's bytes, or a folder's {relative path: bytes}."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def refuse(capsys, monkeypatch, out: Path, argv: list[str]) -> tuple[int, str]:
    """Run a command that must be refused: returns (exit status, its one ``error:`` line) after
    checking that nothing trained and nothing under ``out`` changed."""
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "Learner", _training_started)
        code = main([*argv, "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert snapshot(out) == before, "a refused command wrote into --out"
    assert len(err) == 1 and err[0].startswith("error:"), err
    return code, err[0]


def run_ok(capsys, out: Path, argv: list[str]) -> None:
    """The corrected command runs to the end in ``out``."""
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "result.json").exists()


def run_cli(capsys, tmp_path: Path, *argv: str, monkeypatch=None) -> tuple[int, str]:
    return refuse(capsys, monkeypatch or pytest.MonkeyPatch(), tmp_path / "run", list(argv))


# (case id, what is added to SYNTHETIC, a fragment of the message, the corrected additions).
# tests/README.md's "Bad input refused" table lists every one with its full message.
REFUSED = [
    ("batch_size_0", ["--batch-size", "0"], "error: batch_size must be >= 1, got 0; use a value >= 1", ["--batch-size", "16"]),
    ("seed_negative", ["--seed", "-1"], "error: seed must be in [0, 4294967295] (NumPy's seeds are 32-bit), got -1", ["--seed", "1"]),
    ("order_seed_negative", ["--order-seed", "-1"], "error: order_seed must be in [0, 4294967295]", ["--order-seed", "1"]),
    ("lt_seed_too_big", ["--lt-seed", str(2**32)], "error: lt_seed must be in [0, 4294967295]", ["--lt-seed", "1"]),
    ("lr_negative", ["--lr", "-0.1"], "error: lr must be > 0, got -0.1; use a value > 0", ["--lr", "0.05"]),
    ("lr_nan", ["--set", "lr=nan"], "error: lr must be a finite number > 0, got nan; use a finite value > 0", ["--set", "lr=0.05"]),
    ("lr_inf", ["--set", "lr=inf"], "error: lr must be a finite number > 0, got inf", ["--set", "lr=0.05"]),
    ("rho_below_1", ["--set", "rho=0.5"], "error: rho must be >= 1 (the imbalance ratio n_max / n_min; 1: balanced), got 0.5", ["--set", "rho=10"]),
    ("momentum_1", ["--set", "momentum=1"], "error: momentum must be in [0, 1), got 1.0", ["--set", "momentum=0.5"]),
    ("val_fraction_1", ["--set", "val_fraction=1"], "error: val_fraction must be in [0, 1), got 1.0", ["--set", "val_fraction=0.2"]),
    ("unknown_backbone", ["--set", "backbone=nope"], "error: unknown backbone 'nope'; choose one of: convnet,", ["--set", "backbone=convnet"]),
    ("options_not_a_mapping", ["--set", "options=foo"], "error: options: expected a mapping", []),
    ("num_workers_negative", ["--set", "pipeline=loader", "--set", "num_workers=-1"], "error: num_workers must be >= 0 (0: load in the main process), got -1", ["--set", "pipeline=loader", "--set", "num_workers=0"]),
    ("eval_batch_size_0", ["--set", "eval_batch_size=0"], "error: eval_batch_size must be >= 1, got 0", ["--set", "eval_batch_size=64"]),
    ("image_size_0", ["--set", "image_size=0"], "error: image_size must be >= 1, got 0", ["--set", "image_size=16"]),
    ("memory_per_class_fraction", ["--set", "memory_per_class=0.5"], "error: memory_per_class: expected an integer, got '0.5'", ["--set", "memory_per_class=5"]),
    ("epochs_nan", ["--set", "epochs=nan"], "error: epochs: expected an integer, got 'nan'", ["--set", "epochs=1"]),
    ("milestones_not_increasing", ["--epochs", "3", "--set", "lr_milestones=2,1"], "error: lr_milestones must increase and lie in 1..2", ["--epochs", "3", "--set", "lr_milestones=1,2"]),
    ("milestone_beyond_epochs", ["--epochs", "2", "--set", "lr_milestones=5"], "error: lr_milestones must increase and lie in 1..1", ["--epochs", "2", "--set", "lr_milestones=1"]),
    ("approach_option_out_of_range", ["--set", "approach=dgr", "--set", "dgr.temperature=0"], "error: dgr.temperature must be > 0, got 0.0; use a value > 0", ["--set", "approach=dgr", "--set", "dgr.temperature=2"]),
    ("approach_option_not_a_choice", ["--set", "approach=icarl", "--set", "icarl.classifier=knn"], "error: icarl.classifier must be one of nme, cnn, got 'knn'; use one of nme, cnn", ["--set", "approach=icarl", "--set", "icarl.classifier=cnn"]),
    ("gpu_negative", ["--gpu", "-1"], "error: --gpu must be a CUDA device index >= 0, got -1; use --gpu 0 (or --device cpu)", []),
    ("device_malformed", ["--device", "cuda:-1"], "error: device must be auto, cpu, cuda or cuda:N with N >= 0, got 'cuda:-1'; e.g. --device cuda:0", ["--device", "cpu"]),
    ("data_root_ignored", ["--data-root", "DATA"], "error: synthetic is built in and reads no data folder, so --data-root", []),
]


@pytest.mark.parametrize("added, message, corrected", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_before_anything_is_written_then_the_corrected_command_runs(capsys, monkeypatch, tmp_path, added, message, corrected):
    out = tmp_path / "run"
    added = [str(tmp_path) if a == "DATA" else a for a in added]
    code, line = refuse(capsys, monkeypatch, out, SYNTHETIC + added)
    assert code == 2
    assert line.startswith(message), line
    run_ok(capsys, out, SYNTHETIC + corrected)


@pytest.mark.parametrize(
    "make_out, message",
    [
        (lambda tmp: _file(tmp / "a_file"), "is a file, not a folder; give a folder path"),
        (lambda tmp: _file(tmp / "a_file") / "run", "lies below the file"),
        (lambda tmp: Path("/proc/cil_core_cannot_write_here/run"), "cannot write the run folder /proc/cil_core_cannot_write_here/run"),
    ],
    ids=["existing_file", "below_a_file", "unwritable"],
)
def test_unusable_out_is_refused_and_left_alone(capsys, monkeypatch, tmp_path, make_out, message):
    bad_out = make_out(tmp_path)
    code, line = refuse(capsys, monkeypatch, bad_out, SYNTHETIC)
    assert code == 2 and message in line and "--out" in line, line
    run_ok(capsys, tmp_path / "run", SYNTHETIC)


def _file(path: Path) -> Path:
    path.write_text("not a folder\n")
    return path


def test_folder_of_another_config_is_refused_and_kept(capsys, monkeypatch, tmp_path):
    """README: "a folder of another config is refused". The finished run's folder stays as it
    was; the same command again returns its result without training."""
    out = tmp_path / "run"
    run_ok(capsys, out, SYNTHETIC)
    code, line = refuse(capsys, monkeypatch, out, SYNTHETIC + ["--seed", "1"])
    assert code == 2 and f"{out} holds a run of a different config" in line and "use another --out" in line
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "Learner", _training_started)
        assert main([*SYNTHETIC, "--out", str(out)]) == 0  # finished: returned, not trained again
    run_ok(capsys, tmp_path / "other", SYNTHETIC + ["--seed", "1"])


def write_image_list(root: Path, train_lines: list[str], n_classes: int = 3) -> None:
    """A small valid image-list folder; ``train_lines`` replaces train.txt's content."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        for k in range(4):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / "img" / f"{c}_{k}.png")
    (root / "test.txt").write_text("".join(f"img/{c}_0.png {c}\n" for c in range(n_classes)))
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")


def valid_train_lines(n_classes: int = 3) -> list[str]:
    return [f"img/{c}_{k}.png {c}" for c in range(n_classes) for k in range(4)]


def test_unknown_dataset_lists_valid_ones(capsys, tmp_path):
    code, line = run_cli(capsys, tmp_path, "cifar1000", "dgr", "lt", "5", "20")
    assert code == 2
    assert "unknown dataset 'cifar1000'" in line and "cifar100" in line and "digits" in line


def test_unknown_approach_lists_valid_ones(capsys, tmp_path):
    code, line = run_cli(capsys, tmp_path, "digits", "dgrr", "lt", "2", "5")
    assert code == 2
    assert "unknown approach 'dgrr'" in line and "dgr" in line and "finetune" in line


def test_initial_classes_not_below_class_count(capsys, tmp_path):
    code, line = run_cli(capsys, tmp_path, "digits", "dgr", "lt", "10", "5")
    assert code == 2
    assert "initial_classes=10" in line and "10 classes" in line


def test_too_many_tasks(capsys, tmp_path):
    code, line = run_cli(capsys, tmp_path, "digits", "dgr", "lt", "2", "10")
    assert code == 2
    assert "10 tasks" in line and "only 8 left" in line


def test_bad_scenario_is_refused(capsys, tmp_path):
    code, line = run_cli(capsys, tmp_path, "digits", "dgr", "longtail", "2", "5")
    assert code == 2
    assert "longtail" in line and "ltio" in line


def test_missing_data_folder_says_how_to_prepare(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    code, line = run_cli(capsys, tmp_path, "imagenet_subset", "dgr", "lt", "50", "11", "--data-root", str(missing))
    assert code == 2
    assert str(missing) in line and "python -m cil_core prepare imagenet_subset" in line
    code, line = run_cli(capsys, tmp_path, "imagelist", "dgr", "lt", "2", "2", "--data-root", str(missing))
    assert code == 2
    assert str(missing) in line and "train.txt" in line


def test_bad_label_lines_name_file_and_line(capsys, tmp_path):
    root = tmp_path / "data"
    lines = valid_train_lines()
    lines[4] = "img/1_0.png"  # line 5 of train.txt: no label
    write_image_list(root, lines)
    code, line = run_cli(capsys, tmp_path, "imagelist", "finetune", "lt", "2", "2", "--data-root", str(root))
    assert code == 2
    assert f"{root / 'train.txt'}:5" in line and "add the class label" in line, line
    # The image list's classes come from train.txt (0..2); a test label beyond them is refused.
    (root / "train.txt").write_text("\n".join(valid_train_lines()) + "\n")
    (root / "test.txt").write_text("img/0_0.png 0\nimg/1_0.png 7\nimg/2_0.png 2\n")
    code, line = run_cli(capsys, tmp_path, "imagelist", "finetune", "lt", "2", "2", "--data-root", str(root))
    assert code == 2
    assert f"{root / 'test.txt'}:2" in line and "7" in line, line


def test_undecodable_image_names_path(capsys, tmp_path):
    root = tmp_path / "data"
    write_image_list(root, valid_train_lines())
    broken = root / "img" / "1_2.png"
    broken.write_bytes(b"this is not a png")
    code, line = run_cli(capsys, tmp_path, "imagelist", "finetune", "lt", "2", "2", "--data-root", str(root), "--set", "epochs=1")
    assert code == 2
    assert str(broken) in line


def test_unknown_set_key(capsys, tmp_path):
    code, line = run_cli(capsys, tmp_path, "digits", "dgr", "lt", "2", "5", "--set", "learning_rate=0.1")
    assert code == 2
    assert "unknown option 'learning_rate'" in line and "lr" in line
    code, line = run_cli(capsys, tmp_path, "digits", "dgr", "lt", "2", "5", "--set", "dgr.dakdd=false")
    assert code == 2
    assert "dgr.dakdd" in line


def test_wrong_type_set_value(capsys, tmp_path):
    code, line = run_cli(capsys, tmp_path, "digits", "dgr", "lt", "2", "5", "--set", "epochs=many")
    assert code == 2
    assert line == "error: epochs: expected an integer, got 'many'"
    code, line = run_cli(capsys, tmp_path, "digits", "dgr", "lt", "2", "5", "--set", "dgr.dakd=maybe")
    assert code == 2
    assert "dgr.dakd" in line and "true or false" in line


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["imagenet_subset", "DGR", "0", "lt", "50", "11"], "prepare imagenet_subset --src IMAGENET_DIR"),
        (["Food101", "DGR", "0", "ltio", "50", "6"], "food-101.tar.gz"),
        (["imagenet_1000", "DGR", "0", "conv", "10", "10"], "prepare imagenet_1000 --src IMAGENET_DIR"),
    ],
)
def test_paper_main_sh_examples_say_what_to_download(tmp_path, argv, fragment):
    """The paper's README examples, verbatim through script/main.sh, with the data absent."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["bash", str(repo / "script" / "main.sh"), *argv, "--data-root", str(tmp_path / "absent"), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert str(tmp_path / "absent") in errors[0] and fragment in errors[0]

"""`python -m cil_core` refuses bad input before training: exit 2, one line naming the fix.

Each case calls the CLI's ``main`` in-process (the same code path as the console) and
checks three things: the exit status, that stderr is exactly one ``error:`` line, and that
no result was written (nothing trained).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cil_core.cli import main


def run_cli(capsys, tmp_path: Path, *argv: str) -> tuple[int, str]:
    out = tmp_path / "run"
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert not (out / "result.json").exists(), "a refused run must not train"
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return code, errors[0]


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

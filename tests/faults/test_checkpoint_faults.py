"""Damaged run folders: a checkpoint truncated or corrupted on disk is detected by its
checksum, set aside (``*.corrupt``), the task is trained again from the previous valid
checkpoint, and the run completes with the metrics of an undamaged run; never a crash,
never a crash loop. cil_core level: ``run_experiment`` on scikit-learn's digits, 3 tasks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cil_core.experiment import run_experiment
from cil_core.results import NONDETERMINISTIC_KEYS

EPOCHS = 3
CONFIG = {"dataset": "digits", "approach": "dgr", "scenario": "lt", "initial_classes": 4, "total_tasks": 3, "epochs": EPOCHS, "device": "cpu"}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """One undamaged run: its folder and its result."""
    out = tmp_path_factory.mktemp("original")
    result = run_experiment({**CONFIG, "out": str(out)})
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["task_000.pt", "task_001.pt", "task_002.pt"]
    return out, result


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _interrupted_in_task_2(ckpt: Path) -> None:
    """As if the run was killed while training task 2: task 2 has no checkpoint yet."""
    for path in ckpt.glob("task_002.*"):
        path.unlink()


def _trained_epochs(out: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for line in (out / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["phase"] == "eval":  # a task's evaluation line, not an epoch
            continue
        counts[record["task"]] = counts.get(record["task"], 0) + 1
    return counts


# (damage, checkpoints expected to be set aside, the first task trained again or None)
CASES = {
    "task1_truncated": (lambda c: (_interrupted_in_task_2(c), _truncate(c / "task_001.pt")), ["task_001.pt"], 1),
    "task1_bit_flipped": (lambda c: (_interrupted_in_task_2(c), _flip_byte(c / "task_001.pt")), ["task_001.pt"], 1),
    "newest_truncated": (lambda c: _truncate(c / "task_002.pt"), ["task_002.pt"], 2),
    "checksum_missing": (lambda c: (_interrupted_in_task_2(c), (c / "task_001.sha256").unlink()), ["task_001.pt"], 1),
    "every_checkpoint_damaged": (
        lambda c: ((c / "task_000.pt").write_bytes(b""), _flip_byte(c / "task_001.pt"), _truncate(c / "task_002.pt")),
        ["task_000.pt", "task_001.pt", "task_002.pt"],
        0,
    ),
    "garbage_with_matching_checksum": (  # bytes match their checksum but do not load
        lambda c: (
            _interrupted_in_task_2(c),
            (c / "task_001.pt").write_bytes(b"not a checkpoint"),
            (c / "task_001.sha256").write_text(hashlib.sha256(b"not a checkpoint").hexdigest()),
        ),
        ["task_001.pt"],
        1,
    ),
}


QUICK = {"task1_truncated"}  # the rest are marked slow (a few seconds of training each)


@pytest.mark.parametrize("case", [c if c in QUICK else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_damaged_checkpoint_is_set_aside_and_its_task_trained_again(original, tmp_path, case, caplog):
    source, expected = original
    out = tmp_path / "run"
    shutil.copytree(source, out)
    damage, set_aside, first_retrained = CASES[case]
    damage(out / "checkpoints")
    (out / "result.json").unlink()
    before = _trained_epochs(out)

    result = run_experiment({**CONFIG, "out": str(out)})

    assert sorted(p.name for p in (out / "checkpoints").glob("*.corrupt")) == sorted(f"{name}.corrupt" for name in set_aside)
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["task_000.pt", "task_001.pt", "task_002.pt"]
    assert any("it will be retrained" in r.getMessage() or "unreadable" in r.getMessage() for r in caplog.records)
    after = _trained_epochs(out)
    retrained = {task: after.get(task, 0) - before.get(task, 0) for task in range(3)}
    assert retrained == {task: (EPOCHS if task >= first_retrained else 0) for task in range(3)}
    for key in expected:
        if key not in NONDETERMINISTIC_KEYS and key != "config":
            assert result[key] == expected[key], key
    assert json.loads((out / "result.json").read_text())["status"] == "finished"
    # and again: finished, nothing to do, the set-aside files stay as they are
    assert run_experiment({**CONFIG, "out": str(out)})["acc_matrix"] == expected["acc_matrix"]
    assert _trained_epochs(out) == after


def test_torn_result_json_is_not_fatal(original, tmp_path):
    """A torn result.json (a disk fault: it is written atomically) is not a finished run: the
    run restores every task from its intact checkpoints, trains nothing, writes it again."""
    source, expected = original
    out = tmp_path / "run"
    shutil.copytree(source, out)
    _truncate(out / "result.json")
    before = _trained_epochs(out)
    result = run_experiment({**CONFIG, "out": str(out)})
    assert _trained_epochs(out) == before
    assert result["acc_matrix"] == expected["acc_matrix"] and result["avg_incremental_accuracy"] == expected["avg_incremental_accuracy"]
    assert json.loads((out / "result.json").read_text())["status"] == "finished"


def test_torn_config_json_of_an_unfinished_run_is_not_fatal(original, tmp_path):
    """A torn config.json in a run interrupted in task 2 does not stop the resume (the
    checkpoints carry their own config fingerprint): task 2 is trained, config.json rewritten."""
    source, expected = original
    out = tmp_path / "run"
    shutil.copytree(source, out)
    _interrupted_in_task_2(out / "checkpoints")
    (out / "result.json").unlink()
    _truncate(out / "config.json")
    before = _trained_epochs(out)
    result = run_experiment({**CONFIG, "out": str(out)})
    after = _trained_epochs(out)
    assert {t: after[t] - before[t] for t in range(3)} == {0: 0, 1: 0, 2: EPOCHS}
    assert result["acc_matrix"] == expected["acc_matrix"] and result["avg_incremental_accuracy"] == expected["avg_incremental_accuracy"]
    assert json.loads((out / "config.json").read_text())["fingerprint"] == expected["fingerprint"]


def test_folder_from_before_the_validation_figures_is_trained_again(original, tmp_path, caplog):
    """A folder written before result.json's schema 2 (checkpoint rows without validation
    figures, a schema-1 result): its checkpoints cannot give the validation figures of the
    tasks they hold, so the run starts again and ends with the complete result."""
    import io

    import torch

    from cil_core.checkpoint import save_checkpoint

    source, expected = original
    out = tmp_path / "run"
    shutil.copytree(source, out)
    for task in range(3):
        path = out / "checkpoints" / f"task_{task:03d}.pt"
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=False)
        state["rows"] = [{k: v for k, v in row.items() if k != "val"} for row in state["rows"]]
        save_checkpoint(out, task, state)
    old = json.loads((out / "result.json").read_text())
    (out / "result.json").write_text(json.dumps({**old, "schema_version": 1}))
    before = _trained_epochs(out)
    result = run_experiment({**CONFIG, "out": str(out)})
    after = _trained_epochs(out)
    assert {t: after[t] - before[t] for t in range(3)} == {t: EPOCHS for t in range(3)}
    assert any("predate the validation figures" in r.getMessage() for r in caplog.records)
    for key in expected:
        if key not in NONDETERMINISTIC_KEYS and key != "config":
            assert result[key] == expected[key], key

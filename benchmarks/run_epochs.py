"""One real ``cil_core`` run, reported as images per second per epoch (from its ``log.jsonl``).

``gpu_check.sh`` uses it for the 2-epoch ResNet-18 at 224 px on the loader pipeline: the end-to-end
rate of a real run (JPEG decoding in the DataLoader workers, the learner's execution options),
which the synthetic throughput benchmarks do not cover. Every argument after ``--`` goes to
``python -m cil_core``; ``--out`` is a temporary folder.

    python benchmarks/run_epochs.py -- synthetic finetune lt 20 1 --epochs 2 --device cpu
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from cil_core.cli import main as cli_main


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    with tempfile.TemporaryDirectory(prefix="run_epochs_") as out:
        rc = cli_main([*argv, "--out", out])
        if rc:
            return rc
        rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
        result = json.loads((Path(out) / "result.json").read_text())
    for r in rows:
        print(f"task {r['task']} {r['phase']} epoch {r['epoch']}: {r['images']} images in {r['wall_s']:.1f} s = "
              f"{r['images'] / r['wall_s']:.0f} img/s")
    print("execution:", json.dumps(result["execution"]))
    last = rows[-1]
    print(f"{result['config']['backbone']} at {result['config']['image_size']} px, {result['config']['pipeline']} pipeline: "
          f"{last['images'] / last['wall_s']:.0f} img/s (last epoch), run wall {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

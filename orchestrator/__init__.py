"""orchestrator: sweep files -> Ray Tune trials -> the DGR paper's tables.

``python -m orchestrator sweeps/paper_table.yaml`` expands a sweep into explicit trials,
each resolved by ``cil_core`` and named by its fingerprint (:mod:`orchestrator.trials`), runs the missing ones with
Ray Tune, one ``cil_core.run_experiment`` call per trial (:mod:`orchestrator.trainable`,
:mod:`orchestrator.tune_runner`), and builds tables and plots from their ``result.json``
files (:mod:`orchestrator.report`). Importing this package imports neither Ray nor torch;
the trainable imports ``cil_core`` inside its body, in the Ray worker.
"""

__version__ = "0.1.0"

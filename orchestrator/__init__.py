"""orchestrator: sweep files -> Ray Tune trials -> the DGR paper's tables.

``python -m orchestrator sweeps/paper_table.yaml`` expands a sweep into explicit trials,
each with a stable content-hash id (:mod:`orchestrator.sweep`), runs the missing ones with
Ray Tune, one ``cil_core.run_experiment`` call per trial (:mod:`orchestrator.trainable`,
:mod:`orchestrator.tune_runner`), and builds tables and plots from their ``result.json``
files (:mod:`orchestrator.report`). Importing this package imports neither Ray nor torch;
the trainable imports ``cil_core`` inside its body, in the Ray worker.
"""

__version__ = "0.1.0"

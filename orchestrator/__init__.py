"""orchestrator: sweep files -> Ray Tune trials -> the DGR paper's tables (``orchestrator/README.md``).

Importing this package imports neither Ray nor torch; the trainable imports ``cil_core`` in the Ray worker.
"""

__version__ = "0.1.0"

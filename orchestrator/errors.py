"""Errors the command line turns into ``error: ...`` lines and an exit status (no Ray, no torch here).

Exit status: 0 every trial finished; 1 some did not (or ``report --check`` found a cell outside
its tolerance); 2 bad input, before anything started; 3 another orchestrator holds the results
directory; 130 interrupted (Ctrl-C / SIGTERM; finished work is kept, a rerun resumes).
"""

from __future__ import annotations

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class OrchestratorError(Exception):
    """Bad input a user can fix: each line of the message is printed as ``error: <line>``."""

    exit_code = EXIT_BAD_INPUT


class SweepError(OrchestratorError, ValueError):
    """``<where>: <key>: <problem>``: ``where`` is the file (or ``--set``, ``--address``), ``key`` the dotted key."""

    def __init__(self, where: str, key: str | None, problem: str) -> None:
        super().__init__(": ".join([str(where), *([key] if key else []), problem]))


class InvalidTrials(OrchestratorError):
    """Trials that cannot run (a split the data set cannot hold, ``epochs: 0``, ...): a line per distinct problem."""


class LockedError(OrchestratorError):
    """Another orchestrator process works on the same results directory."""

    exit_code = EXIT_BUSY

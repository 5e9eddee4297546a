"""Errors the command line turns into one line and an exit status.

:class:`SweepError` is bad input a user can fix (a sweep file, a flag, an address): the CLI
prints ``error: <where>: <key>: <problem>`` and exits 2, before Ray starts. Nothing here
imports Ray or torch.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_TRIALS_FAILED = 1  # the sweep ran, but some trials did not finish (or --check failed)
EXIT_BAD_INPUT = 2  # bad sweep file, flag, address or resources: nothing was started
EXIT_BUSY = 3  # another orchestrator holds the results directory's lock
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: finished work is kept, a rerun resumes


class OrchestratorError(Exception):
    """Base class: ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_BAD_INPUT


class SweepError(OrchestratorError, ValueError):
    """Bad input: ``where`` is the file (or ``--set``, ``--address``), ``key`` the dotted key."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, where: str, key: str | None, problem: str) -> None:
        self.where = str(where)
        self.key = key
        self.problem = problem
        parts = [self.where] + ([key] if key else []) + [problem]
        super().__init__(": ".join(parts))


class InvalidTrials(OrchestratorError):
    """Trials that cannot run (a split the data set cannot hold, ``epochs: 0``, ...): one
    line per distinct problem, each naming some of the trials it applies to."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


class LockedError(OrchestratorError):
    """Another orchestrator process works on the same results directory."""

    exit_code = EXIT_BUSY

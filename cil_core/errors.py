"""User-facing errors: one line that names the problem and the fix.

The CLI catches :class:`UserError` and prints it alone (no traceback) with exit code 2,
so anything a user can fix (a flag, a folder, a file) must raise this type.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix; the message says how."""

    exit_code = 2


class DataError(UserError):
    """A data set that is missing, malformed or cannot be decoded."""


class ConfigError(UserError):
    """An unknown option, a value of the wrong type, or an impossible combination."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the task and epoch."""

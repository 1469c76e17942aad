"""User-facing errors: one line naming the key and the value, never a traceback (exit code 2)."""
from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (sweep file, CLI, data). ``str(err)`` is the one line shown."""

    def __init__(self, key: str, value, problem: str):
        self.key, self.value, self.problem = key, value, problem
        super().__init__(f"{key}: {problem} (got {value!r})")

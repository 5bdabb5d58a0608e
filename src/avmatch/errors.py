"""The one error type a user sees: a single line naming the file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class AvmatchError(Exception):
    """A user-facing fault. The CLI prints ``str(err)`` on one line and exits with status 2."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ArgumentError(AvmatchError, ValueError):
    """A bad value given to the Python API (a ValueError too, as Python code expects)."""


class ArgumentTypeError(AvmatchError, TypeError):
    """An argument of the wrong kind given to the Python API, or an unknown keyword (a TypeError too)."""


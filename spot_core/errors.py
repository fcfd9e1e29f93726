"""Errors a user can cause and fix (a bad setting, a missing or malformed file, an unknown name).

Every such error of spot derives from `SpotError`, also when it keeps a built-in base for callers that catch
that (`UnknownNameError` is a KeyError too). Its message says what was wrong and how to fix it, in one line. The
entry points print that line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SpotError(Exception):
    """An error the user can fix; its message says what was wrong and how to fix it."""


class ConfigError(SpotError, ValueError):
    """A setting has a value spot cannot use; the message names the setting as the user writes it."""

"""Errors that reach the user as one line and exit status 2.

Anything raised as `UserError` is the user's to fix (a config key, a path, a column, a resource
the cluster lacks); the CLI prints `error: <message>` and exits 2 without a stack trace. Every
other exception is a bug or an infrastructure failure and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message names the key or path and what was expected."""

    exit_code = 2


class ConfigError(UserError):
    """The config (YAML or `--set`) is invalid."""


class InputError(UserError):
    """The input files are missing, unreadable or lack a required column."""


class ResourceError(UserError):
    """The Ray cluster cannot provide what the config asks for (GPUs, CPUs, replicas)."""


class OutputConflictError(UserError):
    """The output folder holds a different job's output."""

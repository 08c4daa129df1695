"""User errors: bad input or settings, which the CLI reports in one line (exit code 2).

Any other exception is a bug and keeps its traceback. ``--debug`` (or ``LUNGHEART_DEBUG=1``)
shows the traceback of a user error too.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a path, a setting); the message names it and the problem."""


class ConfigError(UserError, ValueError):
    """A command-line or YAML setting that the parser or a constructor rejects."""


class MissingPathError(UserError, FileNotFoundError):
    """A path the user gave does not exist."""

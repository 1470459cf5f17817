"""User-facing errors.

Every error a user can act on is a ``GradlabError``: the CLI prints its message on one
line and exits non-zero, without a traceback. The message names the fix.
"""
from __future__ import annotations


class GradlabError(Exception):
    """An error whose message alone tells the user what to do."""


class ConfigError(GradlabError):
    """A study file or ``--set`` override is malformed."""


class DatasetError(GradlabError):
    """A dataset is missing or unreadable."""


class RunFileError(GradlabError):
    """A run file is missing, not a gradlab run, or otherwise unusable."""


class DiskFullError(GradlabError):
    """A write failed for lack of space; committed epochs are kept and the run can be resumed."""

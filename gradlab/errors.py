"""User-facing errors.

Every error a user can act on is a ``GradlabError``: the CLI prints its message on one
line and exits non-zero, without a traceback. The message names the fix.
"""
from __future__ import annotations

import errno


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


def is_disk_full(exc: BaseException) -> bool:
    """True for an ENOSPC/EDQUOT from the OS, torch.save or HDF5 (which reports errno in text)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left" in text or "errno = 28" in text or "Disk quota exceeded" in text


def did_you_mean(value: str, choices, prefix: str = "") -> str:
    """`` (did you mean "x"?)`` for the closest of ``choices`` to ``value``, or ``""``.

    The one suggestion helper of gradlab: config keys, model and dataset names, metrics."""
    import difflib

    hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f' (did you mean "{prefix}{hint[0]}"?)' if hint else ""

"""The one rule for a name a user gives: checked at the door, before any work.

A user's name becomes an HDF5 link in the run file (a probe is ``/probes/<name>``, a tracked
quantity ``/probes/<o>/<name>``, a scalar key of ``Tracker.epoch_end`` ``/user/<key>``) or a
part of a file name (a study variant). HDF5 reads ``/`` as a path separator and ``.`` as the
group itself, and stores names as C strings in UTF-8, so a name is allowed when it is

- a non-empty ``str``,
- without ``/`` and without the NUL character,
- not ``.``,
- encodable as UTF-8 (no lone surrogates),
- and not a reserved control name (``random@class``) unless it is that control.

``check_name`` raises one ``ConfigError`` saying what is allowed; ``gradlab.Tracker``, the study
config, the quantity registry, the metric registry and the study variants call it where the
name enters. (Imports nothing from gradlab but the errors: every layer above may use it.)
"""
from __future__ import annotations

from typing import Iterable

from gradlab.errors import ConfigError

RULE = "a name must be a non-empty string without '/' or NUL, not '.', in UTF-8"


def problem(name: object) -> str | None:
    """Why ``name`` is not a valid run-file name, or None when it is."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if name == "":
        return "it is empty"
    if name == ".":
        return "'.' is the group itself in HDF5"
    if "/" in name:
        return "'/' separates groups in HDF5, so it would become nested groups"
    if "\x00" in name:
        return "HDF5 stores names as C strings, which end at NUL"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it cannot be written in UTF-8"
    return None


def check_name(kind: str, name: object, reserved: Iterable[str] = (), is_reserved_ok: bool = False) -> str:
    """``name`` when it is an allowed ``kind`` name (probe, quantity, metric, variant, scalar key);
    else one ``ConfigError``. ``reserved``: names that belong to a control gradlab builds
    (``gradlab.registry``), allowed only where ``is_reserved_ok`` (the probe is that control)."""
    why = problem(name)
    if why is not None:
        raise ConfigError(f"{kind} name {name!r} is not allowed ({why}); {RULE}")
    assert isinstance(name, str)
    if name in set(reserved) and not is_reserved_ok:
        raise ConfigError(f"{kind} name {name!r} is reserved for the control gradlab builds "
                          f"(gradlab.orders.batches(dataset, 'random', batching=...)); choose another name")
    return name


def check_names(kind: str, names: Iterable[object]) -> None:
    """``check_name`` for each of ``names``."""
    for n in names:
        check_name(kind, n)

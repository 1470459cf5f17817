"""User code named in a study file: ``model.name`` / ``data.dataset`` = ``"package.module:attr"``.

The module must be importable (installed, or on ``PYTHONPATH``; the study file's own folder
and the working directory are tried too, as a researcher running ``gradlab run`` from the
project root expects).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from gradlab.errors import ConfigError


def is_import_path(name: str) -> bool:
    """``"pkg.mod:attr"``: a module path and an attribute, both non-empty."""
    mod, sep, attr = name.partition(":")
    return bool(sep and mod and attr and all(p.isidentifier() for p in mod.split("."))
                and all(p.isidentifier() for p in attr.split(".")))


def load_object(spec: str, key: str) -> Any:
    """The object ``spec`` = ``"module:attr"`` names; ``key`` (e.g. ``model.name``) for errors."""
    mod_name, _, attr = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"{key} = {spec!r}: cannot import module {mod_name!r} ({exc}); install it or put its "
                          f"folder on PYTHONPATH") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key} = {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key} = {spec!r} is a {type(obj).__name__}, not a function or class to call")
    return obj


def call_user(spec: str, key: str, *args: Any) -> Any:
    """Call the factory ``spec`` names; its own errors become one line naming it."""
    fn = load_object(spec, key)
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the user's code: report it on one line, with its type
        raise ConfigError(f"{key} = {spec!r} raised {type(exc).__name__}: {exc}") from exc

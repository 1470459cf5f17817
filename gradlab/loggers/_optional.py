"""One line naming the extra when a logger's library is missing."""
from __future__ import annotations

import importlib
from typing import Any

from gradlab.errors import GradlabError

EXTRA = 'pip install "gradlab-minibatch[loggers]"'


def need(module: str, package: str, who: str) -> Any:
    """``import module``, or one ``GradlabError`` saying which package and extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GradlabError(f"{who} needs the {package} package, which is not installed: {EXTRA} "
                           f"(or pip install {package})") from None

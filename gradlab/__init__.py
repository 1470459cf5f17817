"""gradlab: gradient-distance studies during training (see README.md)."""
from __future__ import annotations

__version__ = "0.1.0"

from .analysis import Run, open_run  # noqa: E402

__all__ = ["Run", "open_run", "__version__", "plots"]


def __getattr__(name: str):
    # plotly is imported on first use of gradlab.plots, not at package import.
    if name == "plots":
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(name)

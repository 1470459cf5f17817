"""How a ``Run`` shows itself in Jupyter, registered from above (the pandas accessor pattern).

The reader sits below the report, so it cannot build the report's figures or verdicts itself.
``gradlab.notebook`` (imported with ``gradlab.open_run`` / ``gradlab.Run``) registers the two
displays explicitly: ``register("html", run_html)`` gives ``Run._repr_html_`` (what the run is,
its epochs, its probes, its verdicts so far) and ``register("plot", RunPlots)`` gives
``run.plot`` (``heatmap``, ``distances``, ``param_stats``: the report's own plotly figures).
"""
from __future__ import annotations

from typing import Any, Callable

from gradlab.errors import GradlabError

DISPLAYS: dict[str, Callable[[Any], Any]] = {}


def register(kind: str, make: Callable[[Any], Any]) -> None:
    """``kind``: ``html`` (run -> HTML text) or ``plot`` (run -> its plot accessor)."""
    DISPLAYS[kind] = make


class Displayed:
    """Mixed into ``Run``: the registered displays, when there are any."""

    def _repr_html_(self) -> str | None:
        make = DISPLAYS.get("html")
        return make(self) if make is not None else None  # None: Jupyter shows the repr

    @property
    def plot(self) -> Any:
        """The report's own plotly figures of this run: ``run.plot.heatmap(probe)``, ``run.plot.distances()``,
        ``run.plot.param_stats()`` (``gradlab.notebook.RunPlots``)."""
        make = DISPLAYS.get("plot")
        if make is None:
            raise GradlabError("run.plot needs gradlab.notebook: import gradlab.notebook (gradlab.open_run does)")
        return make(self)

"""gradlab: gradient-distance studies during training (see README.md, docs/ and docs/design.md).

The package is laid out by part:

- ``gradlab.registry`` every name a user can type (datasets, models, metrics, orders, stores, policies),
  and the names installed plugins add (entry-point group ``gradlab.plugins``)
- ``gradlab.quantities`` what a probe pass stores, each quantity declared once
- ``gradlab.track``   the tracker: theta_e snapshots, probe passes, gradient stores, distances
- ``gradlab.train``   gradlab's own runner (``gradlab run``): loop, checkpoint, torchrun, provenance
- ``gradlab.data``    datasets, batch orders and the score cache
- ``gradlab.metrics`` the image metrics that order a dataset (one class per file)
- ``gradlab.models``  the built-in networks (one file per model)
- ``gradlab.runfile`` the HDF5 run file: dataset names, writer, reader, schema, SWMR helpers
- ``gradlab.report``  read side: phase summary, figures, HTML report, ``gradlab inspect``
- ``gradlab.orders``  the public entry for probe batches of any image dataset

docs/design.md ("Layers") gives the direction the parts import in.

Top-level names are imported lazily, so ``import gradlab`` (and ``gradlab --help``) stay
cheap: torch, h5py and plotly load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from gradlab.version import __version__

# public name -> (module, attribute or None for the module itself)
_LAZY = {
    "Tracker": ("gradlab.track.tracker", "Tracker"),
    "TrackOptions": ("gradlab.track.options", "TrackOptions"),
    "quantities": ("gradlab.quantities", None),
    "registry": ("gradlab.registry", None),
    "Runner": ("gradlab.train.runner", "Runner"),
    "run_study": ("gradlab.train.runner", "run_study"),
    "Run": ("gradlab.notebook", "Run"),  # gradlab.notebook registers the Jupyter display on the reader's Run
    "open_run": ("gradlab.notebook", "open_run"),
    "load_config": ("gradlab.config", "load_config"),
    "plots": ("gradlab.report.plots", None),
    "orders": ("gradlab.orders", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

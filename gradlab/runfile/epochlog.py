"""What a logger receives after each committed epoch: one flat dict of named numbers.

The values are a pure function of the epoch's rows of the run file (dataset name -> row), so
the live tracker (the rows it has just committed) and ``gradlab export --tensorboard`` (the
rows read back from a finished file) give a logger the same numbers. A tag is the run file's
own dataset name, so it is generic in the tracked quantities (``gradlab.quantities``):

- ``probes/<o>/<quantity>``: a per-batch quantity ``[K]`` as its mean over the epoch's batches
  (``distance_l2``, ``batch_norm``, ``label_entropy``, ...), a per-epoch one as its value
  (``noise_scale``, ``full_norm``, ...); per-layer ``[K, L]`` quantities are left out;
- ``probes/<o>/distance_<m>_in_<control>_units``: the mean D in the common unit (the control's
  mean D at the same epoch; ``gradlab.report.units``), for the controls ``random`` and
  ``random@class`` when the run has them;
- ``train/lr``, ``test/acc``, ``timing/probe_s``, ``user/<key>``, ...: the epoch's scalars;
- ``params/<stat>/<layer>``: the parameter statistics (mean, var, grad_norm) of each tensor at
  the epoch's last recording.

``EpochLogger`` is the protocol ``gradlab.Tracker(loggers=[...])`` calls; ``gradlab.loggers``
holds the TensorBoard and MLflow ones.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from gradlab.registry import CLASS_CONTROL, RANDOM
from gradlab.runfile import names

CONTROLS = (RANDOM, CLASS_CONTROL)
NOT_LOGGED = ("index", "batch_score", "sketch")  # a probe's order and its sketches: not summaries
PARAM_VALUES = (names.PARAM_MEAN, names.PARAM_VAR, names.PARAM_GRAD_NORM)


@runtime_checkable
class EpochLogger(Protocol):
    """Called by the tracker after each committed epoch (rank 0 only, under torchrun)."""

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        """``values``: ``epoch_values`` of epoch ``epoch`` (0 = the untrained initialisation's epoch)."""

    def close(self) -> None:
        """Flush and release; called once when the tracker closes."""


def epoch_values(rows: Mapping[str, Any], layers: Sequence[str]) -> dict[str, float]:
    """The logged values of one epoch from its rows (run-file dataset name -> that epoch's row)."""
    out: dict[str, float] = {}
    for name, row in rows.items():
        a = np.asarray(row, dtype=np.float64)
        parts = name.split("/")
        if parts[0] == names.PROBES:
            if len(parts) == 3 and parts[2] not in NOT_LOGGED and a.ndim <= 1:
                out[name] = float(a.mean()) if a.ndim == 1 else float(a)
        elif name in PARAM_VALUES:
            out.update({f"{name}/{layer}": float(v) for layer, v in zip(layers, a)})
        elif parts[0] != names.PARAMS and a.ndim == 0:
            out[name] = float(a)
    out.update(_in_control_units(out))
    return dict(sorted(out.items()))


def _in_control_units(values: Mapping[str, float]) -> dict[str, float]:
    """``probes/<o>/distance_<m>_in_<control>_units``: mean D / the control's mean D (NaN where 0)."""
    out = {}
    for name, v in values.items():
        _, probe, key = name.split("/") if name.startswith(names.PROBES + "/") else ("", "", "")
        if names.measure_of(key) is None:
            continue
        for control in CONTROLS:
            unit = values.get(names.quantity(control, key))
            if unit is not None:
                out[f"{name}_in_{control}_units"] = v / unit if unit > 0 else float("nan")
    return out


def epoch_rows(run: Any, epoch: int) -> dict[str, np.ndarray]:
    """The rows of committed epoch ``epoch`` of ``run`` (a ``gradlab.runfile.reader.Run``), as
    ``epoch_values`` takes them: every per-epoch dataset's row, and the parameter statistics'
    last recording at or before the epoch's end."""
    if not 0 <= epoch < run.epochs_done:
        raise IndexError(f"epoch {epoch} is not committed in {run.path} ({run.epochs_done} epochs done)")
    rows: dict[str, np.ndarray] = {}
    for probe in run.probes:
        for key in run._quantity_sets(probe):
            rows[names.quantity(probe, key)] = run._read(names.quantity(probe, key), epoch)
    for group in ("train", "test", "timing", "user"):
        for key in run._keys(group):
            name = f"{group}/{key}"
            if run.f[name].ndim == 1 and run.f[name].shape[0] > epoch:
                rows[name] = run._read(name, epoch)
    if run.has_param_stats:
        done = np.flatnonzero(run._read(names.PARAM_EPOCH) <= epoch + 1 + 1e-9)
        for name in PARAM_VALUES:
            if len(done) and run.has(name):
                rows[name] = run._read(name, int(done[-1]))
    return rows

"""What each dataset of the run file means: dimensions, units, description (one table).

The writer calls ``annotate(f, name)`` right after creating a dataset: it writes the
``description`` and ``units`` attributes and attaches HDF5 dimension scales (``epoch``,
``batch``, ``layer``, ``image``, ``step``, ...), so the file speaks for itself in ``h5dump``,
HDFView, MATLAB, Julia or xarray (``h5netcdf`` reads dimension scales as netCDF dimensions).
``Run.to_xarray`` and ``docs/design.md`` (``markdown_table``) use the same table.

A netCDF dimension is visible in its group and every group below it, so the scales live at
the root (``/epoch``, ``/layer``, ``/parameter``), in the probe's group (``batch``, ``image``,
``sketch_bin``) or next to the data (``/params/step``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import h5py
import numpy as np

from gradlab import quantities as Q
from gradlab.runfile import names

GRAD = Q.GRAD  # units of gradients, their norms and distances (gradlab.quantities says why)
O, M, E, KEY = "<o>", "<m>", "<e>", "<key>"  # noqa: E741  (O: the probe placeholder)  # placeholders of the documented patterns


@dataclass(frozen=True)
class Meta:
    """One dataset (or family of datasets: ``<o>`` probe, ``<m>`` measure, ``<e>`` epoch, ``<key>`` name)."""

    pattern: str
    dims: tuple[str, ...]
    description: str
    units: str | None = None
    when: str = ""  # empty: every run has it; else the condition under which it exists
    # per-epoch orders (gradient-informed, rebuilt at every theta_e) store it with a leading epoch axis
    epoch_variant: bool = False

    def dims_of(self, ndim: int) -> tuple[str, ...]:
        """The dimensions of a stored dataset with ``ndim`` axes of this kind."""
        if self.epoch_variant and ndim == len(self.dims) + 1:
            return ("epoch", *self.dims)
        return self.dims[:ndim]


def quantity_rows(quantities: Iterable[Q.Quantity]) -> tuple[Meta, ...]:
    """One row per tracked quantity, from its declaration (``gradlab.quantities``)."""
    return tuple(Meta(names.quantity(O, q.name), q.dims, q.description, q.units, when=q.when) for q in quantities)


def _quantity_rows(measures: bool) -> tuple[Meta, ...]:
    """gradlab's own quantities: the distance measures, or the others."""
    return quantity_rows(q for q in Q.QUANTITIES.values() if isinstance(q, Q.Measure) == measures)


_SEARCH = {  # the search order's per-epoch record (gradlab.track.search.SearchRecord): units, description
    "search_evals": ("1", "Train-mode batch gradients the search evaluated at theta_e (starts and moves); at "
                     "most search_passes x K (the probe attribute search_passes)."),
    "search_seconds": ("s", "Wall time of the search at theta_e (the per-sample scoring pass excluded)."),
    "search_proposed": ("1", "Moves (swaps of blocks of images between two batches) the search evaluated."),
    "search_accepted": ("1", "Moves kept: the real train-mode D of the two batches dropped."),
    "search_d_before": (GRAD, "Mean real train-mode |g_k - nabla_e| (the random probe's full gradient) of the "
                        "search's best start, before any move."),
    "search_d_after": (GRAD, "Mean real train-mode |g_k - nabla_e| of the batches the search returned (the mean of "
                       "its batch_score): the search's objective."),
    "search_d_own": (GRAD, "Mean |g_k - G| of the returned batches against their own mean gradient G, as the probe "
                     "pass stores D (distance_l2); equal to search_d_after without batch statistics."),
    "search_start": ("1", "The start the search began from: its position in the probe attribute search_starts."),
}


def _search_rows() -> tuple[Meta, ...]:
    assert tuple(_SEARCH) == names.SEARCH_RECORD
    return tuple(Meta(names.order_record(O, key), ("epoch",), desc, units, when="search probe")
                 for key, (units, desc) in _SEARCH.items())


def _table() -> tuple[Meta, ...]:
    ep, bt = ("epoch",), ("epoch", "batch")
    return (
        Meta(names.EPOCH, ep, "Dimension scale: epoch number e (0-based); rows at or past the root attribute "
             "epochs_done are not committed yet.", "epochs"),
        Meta(names.LAYER, ("layer",), "Dimension scale: parameter tensor names, in the flat gradient's order."),
        Meta(names.PARAMETER, ("parameter",), "Dimension without values: elements of the flat parameter vector.",
             when="keep_grads"),
        Meta(names.LAYER_NAME, ("layer",), "Parameter tensor names, in the flat gradient's order."),
        Meta(names.LAYER_KIND, ("layer",), "Tensor kind (conv.weight, bn.weight, bias, agc.lambda, ...)."),
        Meta(names.LAYER_NUMEL, ("layer",), "Number of elements of each parameter tensor.", "1"),
        Meta(names.LAYER_SHAPE, ("layer",), "Shape of each parameter tensor (JSON list)."),
        Meta(names.TRAIN_LR, ep, "Learning rate used during epoch e.", "1"),
        Meta(names.TRAIN_PHASE, ep, "Learning-rate phase (0-based) of epoch e.", "1"),
        Meta(names.TRAIN_LOSS, ep, "Mean training loss during epoch e.", "loss units"),
        Meta(names.TRAIN_ACC, ep, "Mean training accuracy during epoch e (fraction).", "1"),
        Meta(names.TRAIN_STEPS, ep, "Optimizer steps taken during epoch e (its full batches; a training policy may "
             "train on fewer images than the set holds).", "1", when="gradlab run"),
        Meta(names.TEST_LOSS, ep, "Test loss after epoch e.", "loss units"),
        Meta(names.TEST_ACC, ep, "Test accuracy after epoch e (fraction; segmentation: pixel accuracy).", "1"),
        Meta(names.TEST_MIOU, ep, "Test mean intersection over union after epoch e (fraction).", "1",
             when="segmentation"),
        Meta(names.TEST_MEAN_ACC, ep, "Test mean per-class accuracy after epoch e (fraction).", "1",
             when="segmentation"),
        Meta(names.TIMING_TRAIN, ep, "Wall time of the training steps of epoch e.", "s"),
        Meta(names.TIMING_PROBE, ep, "Wall time of the probe passes of epoch e.", "s"),
        Meta(names.TIMING_EVAL, ep, "Wall time of the test evaluation after epoch e.", "s"),
        Meta(names.TIMING_SCORE, ep, "Wall time of the per-sample scoring passes that rebuild the gradient-informed "
             "orders at theta_e (part of probe_s).", "s", when="gradient orders"),
        Meta(names.scalar("train_" + KEY), ep, "Another training scalar given to Tracker.epoch_end.", when="user"),
        Meta(names.scalar("test_" + KEY), ep, "Another test scalar given to Tracker.epoch_end.", when="user"),
        Meta(names.scalar("timing_" + KEY), ep, "Another wall time given to Tracker.epoch_end.", "s", when="user"),
        Meta(names.scalar(KEY), ep, "A user scalar given to Tracker.epoch_end.", when="user"),
        Meta(names.probe_batch(O), ("batch",), "Dimension scale: batch number k of the probe order.", "1"),
        Meta(names.probe_image(O), ("image",), "Dimension scale: position of an image in the probe order.", "1"),
        Meta(names.sketch_bin(O), ("sketch_bin",), "Dimension without values: CountSketch bins.",
             when="grads = sketch, keep_grads"),
        Meta(names.probe_index(O), ("image",), "Training-set index of each image, in probe order (empty for user "
             "batches); per epoch (epoch, image) for orders rebuilt at every theta_e (probe attribute "
             "per_epoch_order).", epoch_variant=True),
        Meta(names.batch_score(O), ("batch",), "Mean metric score of the images of batch k (random and user "
             "batches: the batch number); the probe group's score_label attribute names it; per epoch "
             "(epoch, batch) for orders rebuilt at every theta_e.", epoch_variant=True),
        *_search_rows(),
        *_quantity_rows(measures=True),
        *_quantity_rows(measures=False),
        # after every declared quantity, so that a quantity named distance_... is its own row (first match wins)
        Meta(names.distance(O, M), bt, "Distance of another measure between g_k and G_e.", when="measures"),
        Meta(names.sketch(O), ("epoch", "batch", "sketch_bin"), "CountSketch of batch k's gradient at the "
             "start of epoch e.", GRAD, when="grads = sketch, keep_grads"),
        Meta(names.grads(O, E), ("batch", "parameter"),
             "Raw gradient of batch k at the start of the epoch in the name.", GRAD, when="keep_grads"),
        Meta(names.PARAM_STEP, ("step",), "Dimension scale: optimizer steps taken (0 = initialisation).", "steps",
             when="param_stats"),
        Meta(names.PARAM_EPOCH, ("step",), "Epochs completed at the recording (fractional).", "epochs",
             when="param_stats"),
        Meta(names.PARAM_MEAN, ("step", "layer"), "Mean of each parameter tensor.", "parameter units",
             when="param_stats"),
        Meta(names.PARAM_VAR, ("step", "layer"), "Population variance of each parameter tensor.",
             "(parameter units)^2", when="param_stats"),
        Meta(names.PARAM_GRAD_NORM, ("step", "layer"), "Norm of the gradient the recording's step consumed, "
             "per tensor (NaN at step 0).", GRAD, when="param_stats"),
    )


_PLACEHOLDER = {O: r"[^/]+", M: r"[^/]+", E: r"\d+", KEY: r"[^/]+"}
# Dimensions whose scale is built from the dataset's own length when missing: numbered (batch,
# image) or valueless (netCDF "dimension but not a variable"); the others come with the file.
_NUMBERED = ("batch", "image")
_VALUELESS = ("parameter", "sketch_bin")
NETCDF_DIM_ONLY = "This is a netCDF dimension but not a netCDF variable."


def _regex(pattern: str) -> re.Pattern[str]:
    parts = re.split("(" + "|".join(map(re.escape, _PLACEHOLDER)) + ")", pattern)
    return re.compile("".join(_PLACEHOLDER.get(p, re.escape(p)) for p in parts))


_COMPILED: list = []  # ((regex, Meta), ...), built on first use


def table() -> tuple[Meta, ...]:
    """Every row, gradlab's own quantities included."""
    return tuple(m for _, m in _compiled())


def _compiled() -> tuple[tuple[re.Pattern[str], Meta], ...]:
    if not _COMPILED:
        _COMPILED.append(tuple((_regex(m.pattern), m) for m in _table()))
    return _COMPILED[0]


def lookup(name: str, extra: Sequence[Meta] = ()) -> Meta | None:
    """The table row of dataset ``name`` (with or without the leading ``/``); first match wins.
    ``extra``: rows of the quantities one run adds (``quantity_rows``), tried first (their exact
    names win over the table's families such as ``distance_<m>``)."""
    name = name.lstrip("/")
    found = next((m for m in extra if _regex(m.pattern).fullmatch(name)), None)
    return found or next((m for rx, m in _compiled() if rx.fullmatch(name)), None)


def scale_path(dim: str, name: str) -> str:
    """Where the dimension scale ``dim`` of dataset ``name`` lives."""
    parts = name.lstrip("/").split("/")
    probe = parts[1] if parts[0] == names.PROBES and len(parts) > 2 else None
    per_probe = {"batch": names.probe_batch, "image": names.probe_image, "sketch_bin": names.sketch_bin}
    if dim in per_probe and probe is not None:
        return per_probe[dim](probe)
    return {"epoch": names.EPOCH, "layer": names.LAYER, "step": names.PARAM_STEP}.get(dim, dim)


def _scale(f: h5py.File, dim: str, path: str, length: int) -> h5py.Dataset | None:
    """The scale at ``path``, created when it can be made from a length alone; else None."""
    if path in f:
        return f[path]
    if dim in _NUMBERED:
        ds = f.create_dataset(path, data=np.arange(length, dtype=np.int64))
    elif dim in _VALUELESS:
        ds = f.create_dataset(path, shape=(length,), dtype=np.float32)  # storage never allocated
    else:
        return None
    annotate(f, path)
    return ds


def annotate(f: h5py.File, name: str, extra: Sequence[Meta] = ()) -> None:
    """Write ``description``/``units`` and attach the dimension scales of the new dataset ``name``.

    Must run outside SWMR mode (it writes attributes). A dataset not in the table (nor in
    ``extra``, the run's own quantities) is left as it is.
    """
    meta = lookup(name, extra)
    if meta is None:
        return
    ds = f[name]
    ds.attrs["description"] = meta.description
    if meta.units is not None:
        ds.attrs["units"] = meta.units
    for axis, dim in enumerate(meta.dims_of(ds.ndim)):
        path = scale_path(dim, name)
        if path == name.lstrip("/"):
            ds.make_scale(NETCDF_DIM_ONLY if dim in _VALUELESS else dim)
            ds.dims[axis].label = dim
            continue
        scale = _scale(f, dim, path, ds.shape[axis])
        if scale is not None:
            ds.dims[axis].attach_scale(scale)
        ds.dims[axis].label = dim
    if "batch" in meta.dims and name.lstrip("/") != names.batch_score(_probe_of(name)):
        ds.attrs["coordinates"] = "batch_score"  # CF: xarray shows each batch's score as a coordinate


def _probe_of(name: str) -> str:
    parts = name.lstrip("/").split("/")
    return parts[1] if len(parts) > 2 else ""


def detach(ds: h5py.Dataset) -> None:
    """Detach every scale from ``ds`` before it is deleted, so no scale keeps a dangling reference."""
    for axis in range(ds.ndim):
        for scale in list(ds.dims[axis].values()):
            ds.dims[axis].detach_scale(scale)


def markdown_table() -> str:
    """The run-file table of docs/design.md, generated from ``table()``."""
    rows = ["| dataset | dimensions | units | description | present |", "|---|---|---|---|---|"]
    for m in table():
        dims = f"({', '.join(m.dims)})" + (f" or ({', '.join(m.dims_of(len(m.dims) + 1))})" if m.epoch_variant else "")
        cells = (f"`/{m.pattern}`", dims, m.units or "", m.description, m.when or "always")
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":  # print the table (docs/gen_reference.py writes it into docs/design.md)
    print(markdown_table())

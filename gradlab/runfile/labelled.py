"""``Run.to_xarray``: one probe of a run file as a labelled ``xarray.Dataset``."""
from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from gradlab.runfile import annotate, names


def _meta(ds: h5py.Dataset) -> annotate.Meta | None:
    """The table row of ``ds``, or one made from its own attributes (a quantity a run added:
    its description, units and dimension labels are written into the file)."""
    meta = annotate.lookup(ds.name)
    labels = tuple(d.label for d in ds.dims)
    if meta is None and "description" in ds.attrs and all(labels):
        units = ds.attrs.get("units")
        meta = annotate.Meta(ds.name.lstrip("/"), labels, str(ds.attrs["description"]),
                             None if units is None else str(units))
    return meta


def to_xarray(run: Any, probe: str) -> Any:
    """See ``Run.to_xarray`` (``run``: a ``gradlab.runfile.reader.Run``, not imported here so that
    the reader imports this module one way)."""
    import xarray as xr

    run._check_probe(probe)
    coord_names = {f(probe) for f in (names.probe_batch, names.probe_image, names.sketch_bin, names.batch_score)}
    data: dict[str, Any] = {}
    for key, ds in run.f[names.probe(probe)].items():
        meta = _meta(ds) if isinstance(ds, h5py.Dataset) else None
        if meta is None or ds.name.lstrip("/") in coord_names:
            continue  # grads/ and the scales (coordinates below)
        dims = meta.dims_of(ds.ndim)
        values = ds[: run.epochs_done] if dims[0] == "epoch" else ds[()]
        attrs = {"description": meta.description, **({"units": meta.units} if meta.units else {})}
        data[key] = xr.Variable(dims, values, attrs)
    per_epoch = run.is_per_epoch(probe)
    scores = run.batch_score_matrix(probe) if per_epoch else run.batch_scores(probe)
    coords = {"epoch": np.arange(run.epochs_done), "batch": np.arange(run.num_batches(probe)),
              "batch_score": (("epoch", "batch") if per_epoch else "batch", scores),
              "image": np.arange(run.f[names.probe_index(probe)].shape[-1]) if names.probe_index(probe) in run.f
              else np.arange(0)}
    if any("layer" in v.dims for v in data.values()):
        coords["layer"] = run.layers().layer.to_numpy()
    attrs = {"probe": probe, "score_label": run.score_label(probe), "epochs_done": run.epochs_done,
             "run": str(run.path), "status": run.status}
    return xr.Dataset(data, coords=coords, attrs=attrs)



def param_stats_frame(run: Any, stats: tuple[str, ...] | list[str] | None = None) -> Any:
    """``Run.param_stats``: tidy per-tensor statistics of committed epochs (see that method)."""
    import pandas as pd

    cols = ["step", "epoch", "layer", "kind", "depth", "stat", "value"]
    stats = list(stats or run.PARAM_STATS)
    bad = [s for s in stats if s not in run.PARAM_STATS]
    if bad:
        raise KeyError(f"unknown parameter statistic(s) {bad}; choose from {list(run.PARAM_STATS)}")
    if not run.has_param_stats:
        return pd.DataFrame({c: [] for c in cols})
    epoch = run._read(names.PARAM_EPOCH)
    keep = np.flatnonzero(epoch <= run.epochs_done + 1e-9)
    step = run._read(names.PARAM_STEP)[keep]
    layers = run.layers()
    n_s, n_l = len(keep), len(layers)
    frames = []
    for s in stats:
        if f"{names.PARAMS}/{s}" not in run.f:
            continue
        values = run._read(f"{names.PARAMS}/{s}")[keep] if n_s else np.zeros((0, n_l))
        frames.append(pd.DataFrame({
            "step": np.repeat(step, n_l),
            "epoch": np.repeat(epoch[keep], n_l),
            "layer": np.tile(layers.layer.to_numpy(), n_s),
            "kind": np.tile(layers.kind.to_numpy(), n_s),
            "depth": np.tile(np.arange(n_l), n_s),
            "stat": s,
            "value": values.reshape(-1).astype(np.float64),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in cols})

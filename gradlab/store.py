"""HDF5 run file: one self-describing file per run (layout in shared DESIGN.md).

Per-epoch datasets grow along axis 0. ``epochs_done`` is the commit marker: the writer
appends an epoch's rows, flushes, then sets ``epochs_done = e + 1`` and flushes again, so a
reader that trusts only rows ``< epochs_done`` never sees a half-written epoch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .errors import RunFileError
from .layout import ParamLayout

SCHEMA = "gradlab.run/1"
STR = h5py.string_dtype()


def h5_array(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """A tensor as an HDF5-storable array plus its logical dtype (bfloat16 goes as uint16 bits)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy(), "bfloat16"
    return t.numpy(), str(t.dtype).removeprefix("torch.")


class RunWriter:
    """Creates a run file and appends one committed epoch at a time."""

    def __init__(self, path: str | Path, config: dict[str, Any], provenance: dict[str, Any], layout: ParamLayout):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.path, "w", libver="latest", locking=False)
        a = self.f.attrs
        a["schema"] = SCHEMA
        a["config"] = json.dumps(config, sort_keys=True)
        a["status"] = "running"
        a["epochs_done"] = 0
        for k, v in provenance.items():
            a[k] = v if isinstance(v, (int, float)) else str(v)  # plain str: torch.__version__ is a subclass
        g = self.f.create_group("layers")
        g.create_dataset("name", data=np.array(layout.names, dtype=object), dtype=STR)
        g.create_dataset("kind", data=np.array(layout.kinds, dtype=object), dtype=STR)
        g.create_dataset("numel", data=layout.numels)
        g.create_dataset("shape", data=np.array([json.dumps(s) for s in layout.shapes], dtype=object), dtype=STR)
        self.f.flush()

    def add_probe(self, name: str, index: np.ndarray, batch_score: np.ndarray, score_label: str,
                  batch_size: int) -> None:
        g = self.f.require_group(f"probes/{name}")
        g.create_dataset("index", data=index.astype(np.int64))
        g.create_dataset("batch_score", data=batch_score.astype(np.float64))
        g.attrs["score_label"] = score_label
        g.attrs["batch_size"] = batch_size

    def append(self, name: str, row: np.ndarray | float | int, epoch: int) -> None:
        """Write ``row`` as row ``epoch`` of the growing dataset ``name``."""
        row = np.asarray(row)
        if name not in self.f:
            self.f.create_dataset(name, shape=(0, *row.shape), maxshape=(None, *row.shape), dtype=row.dtype,
                                  chunks=(1, *row.shape) if row.size > 1 else (256,))
        ds = self.f[name]
        if ds.shape[0] < epoch + 1:
            ds.resize(epoch + 1, axis=0)
        ds[epoch] = row

    def write_grads(self, name: str, grads: torch.Tensor) -> None:
        """Store raw batch gradients ``[K, P]`` (optional ``/probes/<o>/grads/epoch_<e>``)."""
        arr, dtype = h5_array(grads)
        if name in self.f:
            del self.f[name]
        ds = self.f.create_dataset(name, data=arr, chunks=(1, arr.shape[1]))
        ds.attrs["dtype"] = dtype

    def commit(self, epoch: int) -> None:
        """Make epoch ``epoch`` visible to readers: flush data, then move the marker."""
        self.f.flush()
        self.f.attrs["epochs_done"] = epoch + 1
        self.f.flush()

    def close(self, status: str, reason: str = "") -> None:
        if not self.f.id.valid:
            return
        self.f.attrs["status"] = status
        if reason:
            self.f.attrs["failure"] = reason
        self.f.flush()
        self.f.close()


def open_h5(path: str | Path) -> h5py.File:
    """Open a run file for reading, with a clear error when it is not a gradlab run."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"run file {path} does not exist")
    try:
        f = h5py.File(path, "r", libver="latest", locking=False)
    except OSError as exc:
        raise RunFileError(f"{path} is not an HDF5 file ({exc}); pass a run file written by gradlab run") from None
    schema = f.attrs.get("schema", "")
    if isinstance(schema, bytes):
        schema = schema.decode()
    if not str(schema).startswith("gradlab.run/"):
        f.close()
        raise RunFileError(f"{path} is HDF5 but not a gradlab run (no schema attribute); pass a file written by gradlab run")
    from .schema import resolve  # version check, migration of older files (gradlab/schema.py)

    return resolve(path, f, str(schema))

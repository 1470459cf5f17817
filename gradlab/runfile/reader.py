"""Reading run files: ``open_run(path)`` -> ``Run`` with tidy pandas DataFrames.

Only committed epochs (rows ``< epochs_done``) are ever returned, so a run that is still
being written, or that crashed mid-epoch, reads as its last complete epoch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from gradlab.config import phase_of
from gradlab.runfile import names
from gradlab.runfile.display import Displayed
from gradlab.runfile.provenance import PROVENANCE_KEYS
from gradlab.errors import RunFileError
from gradlab.runfile.writer import open_h5

def _str(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


class Run(Displayed):
    """A read-only view of one run file (``open_run``). Use as a context manager or call ``close()``.

        >>> run = open_run(path)  # path: a small run of a linear model, probes random and sum
        >>> run.status, run.epochs_done, run.probes, run.num_phases
        ('complete', 4, ['random', 'sum'], 2)
        >>> run.distances("random").columns.tolist()
        ['epoch', 'phase', 'batch', 'batch_score', 'distance']
        >>> run.close()

    Attributes:
        config: the study config (or the dict given to ``Tracker``), from the root attribute.
        status: ``running``, ``complete`` or ``failed``.
        epochs_done: committed epochs; every table holds rows ``< epochs_done`` only.
        provenance: versions, device, load, git commit and seed of the run.
        failure: why a failed run stopped ("" otherwise).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.f = open_h5(self.path)
        try:
            self._read_attrs()
        except (OSError, KeyError, RuntimeError) as exc:
            self.f.close()
            raise damaged(self.path, "", exc) from None

    def _read_attrs(self) -> None:
        a = self.f.attrs
        self.config: dict[str, Any] = json.loads(_str(a[names.CONFIG]))
        self.status: str = _str(a[names.STATUS])
        self.epochs_done: int = int(a[names.EPOCHS_DONE])
        self.provenance: dict[str, Any] = {k: _str(a[k]) for k in PROVENANCE_KEYS if k in a}
        self.failure: str = _str(a.get(names.FAILURE, ""))

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (a ``with`` block does it on exit); closing twice is harmless."""
        if self.f.id.valid:
            self.f.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status}, epochs_done={self.epochs_done}, probes={self.probes})"

    # ------------------------------------------------------------------ structure
    @property
    def probes(self) -> list[str]:
        """The probe names (``random``, ``intensity``, ``align@strat``, ...), sorted."""
        return self._keys(names.PROBES)

    @property
    def milestones(self) -> list[int]:
        """Epochs at which a new learning-rate phase starts (from the stored ``/train/phase``
        rows when present, which also covers ``Tracker`` runs without a gradlab config)."""
        phases = self._phases(self.epochs_done)
        if len(phases):
            return [int(e) for e in np.flatnonzero(np.diff(phases)) + 1]
        return list(self.config.get("train", {}).get("milestones", []))

    @property
    def num_phases(self) -> int:
        """Learning-rate phases among the committed epochs (0 before the first commit)."""
        return int(self._phases(self.epochs_done).max()) + 1 if self.epochs_done else 0

    def phase_epochs(self, phase: int) -> np.ndarray:
        """Committed epochs of training phase ``phase``."""
        return np.flatnonzero(self._phases(self.epochs_done) == phase)

    def phase_lr(self, phase: int) -> float:
        """The learning rate of the phase's first epoch, as stored in ``/train/lr`` (so a run
        resumed with another ``train.lr``, or a ``Tracker`` run without a gradlab config,
        reports the rate it trained with); NaN when the run stored none."""
        epochs = self.phase_epochs(phase)
        if not len(epochs) or names.TRAIN_LR not in self.f:
            return float("nan")
        return float(self._read(names.TRAIN_LR, int(epochs[0])))

    def layers(self) -> pd.DataFrame:
        """One row per parameter tensor, in the flat gradient's order: ``layer``, ``kind``, ``numel``."""
        return pd.DataFrame({
            "layer": [_str(n) for n in self._read(names.LAYER_NAME)],
            "kind": [_str(k) for k in self._read(names.LAYER_KIND)],
            "numel": self._read(names.LAYER_NUMEL),
        })

    def measures(self, probe: str) -> list[str]:
        """The distance measures stored for ``probe`` (``l2``, ``cosine``), sorted."""
        try:
            g = self.f[names.probe(probe)] if names.probe(probe) in self.f else {}
            return sorted(m for m in map(names.measure_of, g) if m is not None)
        except (OSError, KeyError, RuntimeError) as exc:
            raise damaged(self.path, names.probe(probe), exc) from None

    def _rows(self, name: str) -> np.ndarray:
        return self._read(name, slice(0, self.epochs_done))

    def _keys(self, group: str) -> list[str]:
        """Sorted member names of ``group`` (none when absent); a damaged group is one line."""
        try:
            return sorted(self.f[group]) if group in self.f else []
        except (OSError, KeyError, RuntimeError) as exc:
            raise damaged(self.path, group, exc) from None

    def _read(self, name: str, sel: Any = ()) -> np.ndarray:
        """``f[name][sel]``; a damaged chunk (Fletcher-32 mismatch) or object is one ``RunFileError``
        naming the dataset and the file, not an HDF5 traceback or numbers read from bad bytes."""
        try:
            return self.f[name][sel]
        except (OSError, KeyError, RuntimeError) as exc:
            if isinstance(exc, KeyError) and not self.has(name):
                raise missing(self.path, name) from None  # an intact file without it is not damaged
            raise damaged(self.path, name, exc) from None

    def is_per_epoch(self, probe: str) -> bool:
        """Whether ``probe`` is rebuilt at every theta_e (gradient-informed order): its index and
        batch scores are then stored per epoch."""
        return bool(self.f[names.probe(probe)].attrs.get(names.PER_EPOCH_ORDER, False))

    def batching(self, probe: str) -> str:
        """``contiguous`` (sorted order cut into consecutive batches), ``stratified`` or ``class``
        (``gradlab.registry.BATCHINGS``)."""
        return _str(self.f[names.probe(probe)].attrs.get(names.BATCHING, "contiguous"))

    def batch_score_matrix(self, probe: str) -> np.ndarray:
        """``[epochs_done, K]``: each batch's score at each committed epoch (a fixed order repeats its row)."""
        k = self.num_batches(probe)
        if self.is_per_epoch(probe):
            return self._rows(names.batch_score(probe))[:, :k].astype(np.float64)
        return np.broadcast_to(self._read(names.batch_score(probe)), (self.epochs_done, k)).astype(np.float64)

    def batch_scores(self, probe: str, epochs: np.ndarray | None = None) -> np.ndarray:
        """``[K]`` batch scores. A per-epoch order's batch k is the k-th of that epoch's order, so
        its score here is the mean over ``epochs`` (default: every committed epoch) of its
        per-epoch scores (``batch_score_matrix``); the batch number where there are none."""
        if not self.is_per_epoch(probe):
            return self._read(names.batch_score(probe))
        m = self.batch_score_matrix(probe)
        m = m if epochs is None else m[np.asarray(epochs, dtype=np.int64)]
        return m.mean(axis=0) if len(m) else np.arange(m.shape[1], dtype=np.float64)

    def num_batches(self, probe: str) -> int:
        """K, the probe's batches per pass."""
        ds = self.f[names.distance(probe, "l2")] if names.distance(probe, "l2") in self.f else None
        if ds is not None and ds.ndim == 2:
            return int(ds.shape[1])
        return int(self.f[names.batch_score(probe)].shape[-1]) if names.batch_score(probe) in self.f else 0

    def order_index(self, probe: str, epoch: int | None = None) -> np.ndarray:
        """Training-set indices in probe order ``[N]`` (a per-epoch order: of ``epoch``, default the last committed)."""
        if not self.is_per_epoch(probe):
            return self._read(names.probe_index(probe))
        if not self.epochs_done:
            return np.zeros(0, dtype=np.int64)
        row = self.epochs_done - 1 if epoch is None else int(epoch)
        return self._read(names.probe_index(probe), row).astype(np.int64)

    def score_label(self, probe: str) -> str:
        """What ``probe``'s batch score is (its metric's label, or ``batch number`` for ``random``)."""
        return _str(self.f[names.probe(probe)].attrs.get("score_label", "batch score"))

    def _check_probe(self, probe: str) -> None:
        if probe not in self.probes:
            raise KeyError(f"probe {probe!r} not in run {self.path}; it has {self.probes}")

    # ------------------------------------------------------------------ tables
    def distance_matrix(self, probe: str, measure: str = "l2", target: str = "own") -> np.ndarray:
        """D as ``[epochs_done, K]``: to the probe's own full gradient (``target="own"``, the paper's
        D), or to the common target, the reference probe's full gradient (``"common"``:
        ``common_distance_<measure>``; a ``KeyError`` when the run did not record it)."""
        self._check_probe(probe)
        if target == "common":
            name = names.quantity(probe, "common_" + names.distance(probe, measure).rsplit("/", 1)[1])
            if name not in self.f:
                raise KeyError(f"probe {probe!r} of {self.path} has no common-target {measure} distances (recorded "
                               f"since the common target was added, when the run had a reference probe)")
            return self._rows(name)
        return self._rows(names.distance(probe, measure))

    def _phases(self, n: int) -> np.ndarray:
        """Phase of epochs 0..n-1: the stored ``/train/phase`` rows, else from the config's milestones."""
        if names.TRAIN_PHASE in self.f and self.f[names.TRAIN_PHASE].shape[0] >= n:
            return self._read(names.TRAIN_PHASE, slice(0, n)).astype(np.int64)
        stones = list(self.config.get("train", {}).get("milestones", []))
        return np.array([phase_of(int(i), stones) for i in range(n)], dtype=np.int64)

    def _batch_frame(self, probe: str, e: int, k: int) -> dict[str, np.ndarray]:
        """The index columns of a per-(epoch, batch) table: epoch, phase, batch, batch_score."""
        return {
            "epoch": np.repeat(np.arange(e), k),
            "phase": self._phases(e).repeat(k),
            "batch": np.tile(np.arange(k), e),
            "batch_score": self.batch_score_matrix(probe)[:e].reshape(-1),  # per-epoch orders: that epoch's
        }

    def distances(self, probe: str, measure: str | None = "l2") -> pd.DataFrame:
        """Tidy D: one row per (epoch, batch) with phase and the batch's metric score.

        With a measure name the values are in column ``distance``; with ``measure=None``
        every stored measure is a column named after it (``l2``, ``cosine``, ...).
        """
        self._check_probe(probe)
        measures = [measure] if measure is not None else self.measures(probe)
        if measure is not None and measure not in self.measures(probe):
            raise KeyError(f"measure {measure!r} not stored for probe {probe!r}; it has {self.measures(probe)}")
        mats = {m: self.distance_matrix(probe, m) for m in measures}
        e, k = next(iter(mats.values())).shape if mats else (self.epochs_done, self.num_batches(probe))
        cols = self._batch_frame(probe, e, k)
        for m, d in mats.items():
            cols["distance" if measure is not None else m] = d.reshape(-1)
        return pd.DataFrame(cols)

    def layer_distances(self, probe: str, measure: str = "l2") -> pd.DataFrame:
        """Per-layer D: one row per (epoch, batch, layer) with the layer's name, kind and size."""
        self._check_probe(probe)
        name = names.layer_distance(probe, measure)
        if name not in self.f:
            raise KeyError(f"probe {probe!r} has no per-layer {measure} distances (track.per_layer was off)")
        d = self._rows(name)  # [E, K, L]
        e, k, n = d.shape
        lay = self.layers()
        cols = {c: np.repeat(v, n) for c, v in self._batch_frame(probe, e, k).items()}
        cols["layer_index"] = np.tile(np.arange(n), e * k)
        cols["layer"] = np.tile(lay.layer.to_numpy(), e * k)
        cols["kind"] = np.tile(lay.kind.to_numpy(), e * k)
        cols["numel"] = np.tile(lay.numel.to_numpy(), e * k)
        cols["distance"] = d.reshape(-1)
        return pd.DataFrame(cols)

    def norms(self, probe: str) -> pd.DataFrame:
        """Per (epoch, batch): batch gradient norm, the epoch's full-gradient norm, batch loss."""
        self._check_probe(probe)
        bn = self._rows(names.batch_norm(probe))
        e, k = bn.shape
        cols = self._batch_frame(probe, e, k)
        cols["batch_norm"] = bn.reshape(-1)
        cols["full_norm"] = np.repeat(self._rows(names.full_norm(probe))[:e], k)
        if names.batch_loss(probe) in self.f:
            cols["batch_loss"] = self._rows(names.batch_loss(probe)).reshape(-1)
        return pd.DataFrame(cols)

    def batch_loss(self, probe: str) -> pd.DataFrame:
        """Per (epoch, batch): the batch's loss at the epoch-start parameters θ_e."""
        if names.batch_loss(probe) not in self.f:
            raise KeyError(f"probe {probe!r} of {self.path} stored no batch_loss")
        return self.norms(probe).drop(columns=["batch_norm", "full_norm"])

    def noise_scale(self, probe: str | None = None) -> pd.DataFrame:
        """Per (probe, epoch): the simple noise scale B = trace / g2 (NaN where g2 <= 0: undefined),
        its two unbiased components ``g2`` (|G_true|^2) and ``trace`` (tr(Sigma)), and the
        full-gradient norm; all probes by default. Average ``trace`` and ``g2`` over epochs
        before dividing for a pooled estimate. Files written before the components were
        stored give NaN components, and their +inf ratios read as NaN."""
        frames = []
        for p in [probe] if probe is not None else self.probes:
            self._check_probe(p)
            ns = self._rows(names.noise_scale(p)).astype(np.float64)
            n = len(ns)
            parts = {c: (self._rows(name)[:n] if name in self.f else np.full(n, np.nan))
                     for c, name in (("g2", names.noise_g2(p)), ("trace", names.noise_trace(p)))}
            frames.append(pd.DataFrame({
                "probe": p, "epoch": np.arange(n), "phase": self._phases(n),
                "noise_scale": np.where(np.isinf(ns), np.nan, ns), **parts,
                "full_norm": self._rows(names.full_norm(p))[:n],
            }))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["probe", "epoch", "phase", "noise_scale", "g2", "trace", "full_norm"])

    # ------------------------------------------------------------------ tracked quantities
    def _quantity_sets(self, probe: str) -> dict[str, h5py.Dataset]:
        """The probe's tracked quantities (``gradlab.quantities``): its datasets along the epoch axis,
        except the order itself (index, batch_score) and the sketches."""
        self._check_probe(probe)
        skip = {names.probe_index(probe), names.batch_score(probe), names.sketch(probe)}
        try:
            items = self.f[names.probe(probe)].items()
            return {k: ds for k, ds in items if isinstance(ds, h5py.Dataset) and ds.name.lstrip("/") not in skip
                    and ds.ndim and self._dims(ds)[0] == names.EPOCH}
        except (OSError, KeyError, RuntimeError) as exc:
            raise damaged(self.path, names.probe(probe), exc) from None

    def _dims(self, ds: h5py.Dataset) -> tuple[str, ...]:
        """A dataset's dimension names: its HDF5 labels, else the annotation table's."""
        labels = tuple(d.label for d in ds.dims)
        if all(labels):
            return labels
        from gradlab.runfile import annotate

        meta = annotate.lookup(ds.name)
        return meta.dims_of(ds.ndim) if meta is not None else labels

    def quantities(self, probe: str) -> pd.DataFrame:
        """What ``probe`` stores per epoch: one row per tracked quantity with its ``dims``,
        ``units`` and ``description``, as the file records them (so a quantity declared in your
        own code reads back in any process, without that code)."""
        rows = [{"quantity": k, "dims": ",".join(self._dims(ds)), "units": _str(ds.attrs.get("units", "")),
                 "description": _str(ds.attrs.get("description", ""))}
                for k, ds in self._quantity_sets(probe).items()]
        return pd.DataFrame(rows, columns=["quantity", "dims", "units", "description"])

    def quantity(self, probe: str, name: str) -> pd.DataFrame:
        """Tidy rows of one quantity: per (epoch, batch[, layer]) with phase and batch score, or
        per epoch with phase; the values are in a column named after the quantity."""
        sets = self._quantity_sets(probe)
        if name not in sets:
            raise KeyError(f"probe {probe!r} of {self.path} stores no {name!r}; it has {sorted(sets)}")
        d = self._rows(names.quantity(probe, name))
        dims = self._dims(sets[name])
        if dims == (names.EPOCH,):
            e = len(d)
            return pd.DataFrame({"epoch": np.arange(e), "phase": self._phases(e), name: d})
        e, k = d.shape[:2]
        cols = self._batch_frame(probe, e, k)
        if d.ndim == 3:  # (epoch, batch, layer)
            n = d.shape[2]
            cols = {c: np.repeat(v, n) for c, v in cols.items()}
            cols["layer"] = np.tile(self.layers().layer.to_numpy(), e * k)
        cols[name] = d.reshape(-1)
        return pd.DataFrame(cols)

    def batch_table(self, probe: str) -> pd.DataFrame:
        """Every (epoch, batch) quantity of ``probe`` as a column: one row per epoch and batch."""
        sets = self._quantity_sets(probe)
        keys = [k for k, ds in sets.items() if self._dims(ds) == (names.EPOCH, "batch")]
        e, k = self.epochs_done, self.num_batches(probe)
        cols = self._batch_frame(probe, e, k)
        for key in keys:
            cols[key] = self._rows(names.quantity(probe, key))[:e].reshape(-1)
        return pd.DataFrame(cols)

    def epoch_table(self, probe: str) -> pd.DataFrame:
        """Every per-epoch quantity of ``probe`` (full_norm, noise components, ...) as a column."""
        sets = self._quantity_sets(probe)
        e = self.epochs_done
        cols: dict[str, Any] = {"epoch": np.arange(e), "phase": self._phases(e)}
        for key, ds in sets.items():
            if self._dims(ds) == (names.EPOCH,):
                cols[key] = self._rows(names.quantity(probe, key))[:e]
        return pd.DataFrame(cols)

    def to_xarray(self, probe: str) -> Any:
        """One probe as an ``xarray.Dataset`` of committed epochs only: ``distance_l2(epoch, batch)``,
        ``layer_distance_l2(epoch, batch, layer)``, ``full_norm(epoch)``, ... with coordinates
        epoch, batch, batch_score, layer (names) and image, and each variable's ``units`` and
        ``description`` (from ``gradlab.runfile.annotate``; so files of older schemas get them too;
        a quantity outside gradlab's table from its own attributes). Raw gradients (``grads/``) are
        left out."""
        from gradlab.runfile.labelled import to_xarray

        return to_xarray(self, probe)

    def datasets(self) -> pd.DataFrame:
        """Every dataset in the file: name, shape, dtype (for ``gradlab inspect``)."""
        rows: list[dict[str, Any]] = []
        self.f.visititems(lambda n, o: rows.append({"name": n, "shape": tuple(o.shape), "dtype": str(o.dtype)})
                          if isinstance(o, h5py.Dataset) else None)
        return pd.DataFrame(rows, columns=["name", "shape", "dtype"])

    def train_curves(self) -> pd.DataFrame:
        """Per epoch: lr, phase, train loss/acc (during the epoch) and test loss/acc (after it)."""
        cols = {"epoch": np.arange(self.epochs_done)}
        for name in names.CURVES:
            if name in self.f:
                cols[name.replace("/", "_")] = self._rows(name)
        return pd.DataFrame(cols)

    def timing(self) -> pd.DataFrame:
        """Per epoch: seconds of training, evaluation, probe passes and (inside them) per-sample
        scoring (``/timing/*``; the columns the run recorded)."""
        cols = {"epoch": np.arange(self.epochs_done)}
        for name in (names.TIMING_TRAIN, names.TIMING_EVAL, names.TIMING_PROBE, names.TIMING_SCORE):
            if name in self.f:
                cols[name.split("/")[1]] = self._rows(name)
        return pd.DataFrame(cols)

    # ------------------------------------------------------------------ parameter statistics
    PARAM_STATS = ("mean", "var", "grad_norm")

    @property
    def has_param_stats(self) -> bool:
        """Whether the run recorded parameter statistics (``/params``, ``track.param_stats``)."""
        return names.PARAM_STEP in self.f

    def param_stats(self, stats: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
        """Tidy per-tensor statistics (``gradlab.track.paramstats``): one row per (recording, layer,
        stat) with columns step, epoch (float: epochs completed), layer, kind, depth (the
        layer's index in ``/layers``, i.e. forward order), stat (mean | var | grad_norm), value.

        Only recordings of committed epochs (``epoch <= epochs_done``) are returned; a run
        without ``/params`` gives an empty frame with these columns.
        """
        from gradlab.runfile.labelled import param_stats_frame

        return param_stats_frame(self, stats)

    # ---- public accessors for the read side (report, inspect, export)
    @property
    def schema(self) -> str | None:
        """The file's schema tag (``gradlab.run/<n>``, root attribute ``schema``); None when absent."""
        return _str(self.f.attrs.get(names.SCHEMA))

    @property
    def migrated_from(self) -> str | None:
        """The schema the file was written in, when ``open_run`` migrated it to the current one in
        memory on opening (``gradlab.runfile.schema``; the file itself is unchanged); None for a file
        written in the current schema."""
        return _str(self.f.attrs.get("migrated_from"))

    def has(self, name: str) -> bool:
        """Whether the file holds the dataset or group ``name``, a path built with
        ``gradlab.runfile.names`` (e.g. ``names.full_norm(probe)``, ``names.TEST_ACC``)."""
        try:
            return name in self.f
        except (OSError, KeyError, RuntimeError) as exc:
            raise damaged(self.path, name, exc) from None

    def layer_distance_matrix(self, probe: str, measure: str = "l2") -> np.ndarray:
        """Per-layer D as ``[epochs_done, K, L]`` (layers in ``layers()`` order); a ``KeyError``
        when the probe stored none for ``measure`` (``track.per_layer`` was off)."""
        self._check_probe(probe)
        name = names.layer_distance(probe, measure)
        if name not in self.f:
            raise KeyError(f"probe {probe!r} has no per-layer {measure} distances (track.per_layer was off)")
        return self._rows(name)

    def probe_attrs(self, probe: str) -> dict[str, Any]:
        """The attributes of the probe's group (``batch_size``, ``score_label``, ``batching``, ...),
        strings decoded; a ``KeyError`` for a probe the run does not have."""
        self._check_probe(probe)
        try:
            return {k: _str(v) for k, v in self.f[names.probe(probe)].attrs.items()}
        except (OSError, KeyError, RuntimeError) as exc:
            raise damaged(self.path, names.probe(probe), exc) from None


def missing(path: Path, name: str) -> RunFileError:
    """The one-line error for a dataset an intact file does not hold."""
    return RunFileError(f"{path}: it has no dataset /{name} (the run did not store it; the file is intact)")


def damaged(path: Path, name: str, exc: BaseException) -> RunFileError:
    """The one-line error for a dataset that HDF5 cannot read back."""
    text = " ".join(str(exc).split())
    why = ("its Fletcher-32 checksum does not match: the bytes on disk changed after they were written"
           if "filter" in text.lower() or "checksum" in text.lower() else f"HDF5 says: {text}")
    what = f"dataset /{name}" if name else "its root attributes"
    return RunFileError(f"{path}: {what} is damaged ({why}); restore the file from a copy, or rerun it "
                        f"(gradlab run --overwrite)")


def open_run(path: str | Path) -> Run:
    """Open a gradlab run file for analysis: a ``Run`` (read-only; a file of an older schema is
    migrated in memory, a damaged or foreign file is one ``RunFileError``).

        >>> with open_run(path) as run:  # path: a small run of a linear model
        ...     run.norms("random")[["epoch", "batch", "batch_norm"]].shape
        (16, 3)
    """
    return Run(path)

"""HDF5 run file: one self-describing file per run (layout in shared DESIGN.md).

Per-epoch datasets grow along axis 0. ``epochs_done`` is the commit marker: the writer
appends an epoch's rows, flushes, then sets ``epochs_done = e + 1`` and flushes again, so a
reader that trusts only rows ``< epochs_done`` never sees a half-written epoch.
"""
from __future__ import annotations

import functools
import json
import shutil
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

import h5py
import numpy as np
import torch

from gradlab.runfile import names
from gradlab.runfile.annotate import annotate, detach
from gradlab.runfile.schema import SCHEMA, resolve  # noqa: F401  (SCHEMA re-exported: what the writer writes)
from gradlab.errors import RunFileError, is_disk_full
from gradlab.runfile.swmr import WRITE_LIBVER, open_clearing_flags, open_elsewhere, open_read, stop_writing

F = TypeVar("F", bound=Callable[..., Any])


def _writes(method: F) -> F:
    """A method that writes the run file: when HDF5 fails (ENOSPC, EIO, ...) the writer abandons the
    file (``RunWriter.abandon``) before the error propagates, and does not touch it again."""

    @functools.wraps(method)
    def wrapper(self: "RunWriter", *args: Any, **kwargs: Any) -> Any:
        if self.abandoned:
            raise RunFileError(f"{self.path}: an earlier write failed, so the file was left as it was; free space "
                               f"or fix the disk, then continue with gradlab run --resume")
        try:
            return method(self, *args, **kwargs)
        except (OSError, RuntimeError) as exc:
            if write_failed(exc):
                self.abandon(exc)
            raise

    return wrapper  # type: ignore[return-value]


def write_failed(exc: BaseException) -> bool:
    """Whether HDF5 failed to write (h5py raises ``OSError``, or ``RuntimeError`` for a failed flush)."""
    return isinstance(exc, OSError) or is_disk_full(exc) or "write failed" in str(exc)

class Layers(Protocol):
    """The parameter tensors of a model, as ``/layers`` records them (``gradlab.track.layout.ParamLayout``)."""

    names: Sequence[str]
    kinds: Sequence[str]
    numels: np.ndarray
    shapes: Sequence[Sequence[int]]


STATUS_ROOM = 1 << 20  # bytes free that recording a failure needs at most (superblock, attributes, metadata)
STR = h5py.string_dtype()
# Fletcher-32 checksum on every numeric dataset (HDF5 allows no filters on variable-length
# strings): a chunk damaged on disk fails on read instead of reading back as numbers.
CHECKSUM = {"fletcher32": True}


def h5_array(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """A tensor as an HDF5-storable array plus its logical dtype (bfloat16 goes as uint16 bits)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy(), "bfloat16"
    return t.numpy(), str(t.dtype).removeprefix("torch.")


class RunWriter:
    """Creates a run file and appends one committed epoch at a time, crash-safely.

    Rows given to ``append`` wait in memory until ``write_pending``/``commit`` writes them;
    the file itself is in HDF5 SWMR-write mode from ``start()`` to ``close()``, so a SIGKILL
    at any moment leaves a file that opens (``open_h5``) with every committed epoch intact,
    and readers can open it while it is written. SWMR forbids creating datasets, so the
    writer leaves SWMR for the milliseconds in which it creates the datasets of names seen
    for the first time (normally all at the first commit) and re-enters it at once. Any
    name may therefore be appended at any epoch; nothing has to be declared up front.
    """

    abandoned = False  # a write failed: the file is left as the failure left it (``abandon``)

    def __init__(self, path: str | Path, config: dict[str, Any], provenance: dict[str, Any], layout: Layers):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.path, "w", libver=WRITE_LIBVER, locking=False)
        self._pending: dict[str, dict[int, np.ndarray]] = {}
        a = self.f.attrs
        a[names.SCHEMA] = SCHEMA
        a[names.CONFIG] = json.dumps(config, sort_keys=True)
        a[names.STATUS] = "running"
        a[names.EPOCHS_DONE] = 0
        a[names.RUN_ID] = self.run_id = uuid.uuid4().hex  # ties the checkpoint to this file
        for k, v in provenance.items():
            # plain str: torch.__version__ is a subclass of str
            a[k] = v if isinstance(v, (int, float, np.ndarray)) else str(v)
        g = self.f.create_group(names.LAYERS)
        g.create_dataset("name", data=np.array(layout.names, dtype=object), dtype=STR)
        g.create_dataset("kind", data=np.array(layout.kinds, dtype=object), dtype=STR)
        g.create_dataset("numel", data=layout.numels, **CHECKSUM)
        g.create_dataset("shape", data=np.array([json.dumps(s) for s in layout.shapes], dtype=object), dtype=STR)
        self.f.create_dataset(names.LAYER, data=np.array(layout.names, dtype=object), dtype=STR)
        self._create(names.EPOCH, np.int64(0))  # grows with the per-epoch rows (write_pending)
        for name in (names.LAYER, names.LAYER_NAME, names.LAYER_KIND, names.LAYER_NUMEL, names.LAYER_SHAPE):
            annotate(self.f, name)
        self.f.flush()

    @classmethod
    def reopen(cls, path: str | Path, epochs_done: int, rows: dict[str, int], config: dict[str, Any],
               run_id: str | None) -> "RunWriter":
        """Continue a run file (``--resume``): clear a killed writer's flags, drop every row and
        dataset written after the checkpoint (``rows``: dataset name -> row count at the
        checkpoint's commit), set ``epochs_done`` and re-enter SWMR."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self._pending = {}
        try:
            self.f = open_clearing_flags(self.path)
        except OSError as exc:
            raise RunFileError(f"cannot reopen {self.path} to resume it ({exc}); "
                               f"start again with --overwrite") from None
        a = self.f.attrs
        if text_attr(a.get(names.SCHEMA, "")) != SCHEMA:
            self.f.close()
            raise RunFileError(f"{self.path} is not a gradlab run ({SCHEMA}); cannot resume it")
        self.run_id = text_attr(a.get(names.RUN_ID, ""))
        if run_id is not None and self.run_id != run_id:
            self.f.close()
            raise RunFileError(f"the checkpoint next to {self.path} belongs to another run (run_id differs); "
                               f"start again with --overwrite")
        try:
            existing = _datasets(self.f)
        except (OSError, KeyError, RuntimeError) as exc:
            self.f.close()
            raise RunFileError(f"{self.path} is damaged and cannot be resumed ({' '.join(str(exc).split())}); "
                               f"restore it from a copy and resume again, or start again with --overwrite") from None
        # Scales last: a dataset is detached from its scales before either is deleted.
        for name, ds in sorted(existing.items(), key=lambda item: _is_scale(item[1])):
            if name not in rows:
                detach(ds)
                del self.f[name]  # written during the interrupted epoch
            elif ds.shape[0] != rows[name]:
                if ds.maxshape[0] is not None or ds.shape[0] < rows[name]:
                    self.f.close()
                    raise RunFileError(f"{self.path}: dataset /{name} has {ds.shape[0]} rows, the checkpoint "
                                       f"expects {rows[name]}; the run file and checkpoint do not match")
                ds.resize(rows[name], axis=0)
        a[names.EPOCHS_DONE] = epochs_done
        a[names.STATUS] = "running"
        a[names.CONFIG] = json.dumps(config, sort_keys=True)
        a[names.RESUMES] = int(a.get(names.RESUMES, 0)) + 1
        if names.FAILURE in a:
            del a[names.FAILURE]
        self.f.flush()
        self.start()
        return self

    # ------------------------------------------------------------------ SWMR switching
    @property
    def swmr(self) -> bool:
        """Whether the file is in SWMR-write mode now (h5py's own flag)."""
        return bool(self.f.swmr_mode)

    @_writes
    def start(self) -> None:
        """Flush, and enter SWMR-write mode if not in it (call once the static datasets exist)."""
        self.f.flush()
        if not self.swmr:
            self.f.swmr_mode = True

    def _plain(self) -> None:
        """Leave SWMR (close and reopen read/write) so that datasets can be created."""
        if self.swmr:
            self.f.flush()
            self.f.close()
            self.f = h5py.File(self.path, "r+", libver=WRITE_LIBVER, locking=False)

    # ------------------------------------------------------------------ writing
    @_writes
    def add_probe(self, name: str, index: np.ndarray, batch_score: np.ndarray, score_label: str,
                  batch_size: int, per_epoch: bool = False, attrs: dict[str, Any] | None = None) -> None:
        """A probe group. A fixed order writes ``index [N]`` and ``batch_score [K]`` now; a
        ``per_epoch`` order (rebuilt at every theta_e) appends them as rows ``[E, N]``, ``[E, K]``."""
        was = self.swmr
        self._plain()
        g = self.f.require_group(names.probe(name))
        g.attrs["score_label"] = score_label
        g.attrs["batch_size"] = batch_size
        g.attrs[names.PER_EPOCH_ORDER] = bool(per_epoch)
        for key, value in (attrs or {}).items():
            g.attrs[key] = value
        if not per_epoch:
            g.create_dataset("index", data=index.astype(np.int64), **CHECKSUM)
            g.create_dataset("batch_score", data=batch_score.astype(np.float64), **CHECKSUM)
            for ds in (names.probe_index(name), names.batch_score(name)):
                annotate(self.f, ds)  # also creates the probe's batch and image scales
        if was:
            self.start()

    @_writes
    def append(self, name: str, row: np.ndarray | float | int, epoch: int) -> None:
        """Write ``row`` as row ``epoch`` of the growing dataset ``name`` (at the next commit).

        ``epoch`` is the row index; datasets indexed by something else (steps) work too.
        Before ``start()`` a new name's (empty) dataset is created at once, so callers may set
        attributes on it or its group; later ones are created at the next commit."""
        row = np.array(row)
        if not self.swmr and name not in self.f:
            self._create(name, row)
        self._pending.setdefault(name, {})[int(epoch)] = row

    def _create(self, name: str, row: np.ndarray) -> None:
        self.f.create_dataset(name, shape=(0, *row.shape), maxshape=(None, *row.shape), dtype=row.dtype,
                              chunks=(1, *row.shape) if row.size > 1 else (256, *row.shape), **CHECKSUM)
        annotate(self.f, name, getattr(self, "described", ()))  # described: the run's own quantities' rows

    @_writes
    def write_pending(self) -> None:
        """Write every appended row to the file and flush (the marker does not move)."""
        if not self._pending:
            self.start()
            return
        new = [n for n in self._pending if n not in self.f]
        if new:
            self._plain()
            for name in sorted(new, key=lambda n: n != names.PARAM_STEP):  # the step scale before its users
                self._create(name, next(iter(self._pending[name].values())))
            self.start()
        for name, rows in self._pending.items():
            ds = self.f[name]
            end = max(rows) + 1
            if ds.shape[0] < end:
                ds.resize(end, axis=0)
            for i, row in sorted(rows.items()):
                ds[i] = row
        self._grow_epochs(max((self.f[n].shape[0] for n in self._pending if _per_epoch(self.f[n])), default=0))
        self._pending = {}
        self.start()  # flushes; a writer whose owner never called start() is crash-safe from here on

    def _grow_epochs(self, rows: int) -> None:
        """Extend the ``/epoch`` scale to ``rows`` epoch numbers (it follows the longest per-epoch dataset)."""
        ep = self.f[names.EPOCH]
        n = ep.shape[0]
        if rows > n:
            ep.resize(rows, axis=0)
            ep[n:rows] = np.arange(n, rows)

    @_writes
    def write_grads(self, name: str, grads: torch.Tensor) -> None:
        """Store raw batch gradients ``[K, P]`` (optional ``/probes/<o>/grads/epoch_<e>``)."""
        arr, dtype = h5_array(grads)
        self._plain()
        if name in self.f:
            detach(self.f[name])
            del self.f[name]
        ds = self.f.create_dataset(name, shape=arr.shape, dtype=arr.dtype, chunks=(1, arr.shape[1]), **CHECKSUM)
        ds.attrs["dtype"] = dtype
        annotate(self.f, name)
        self.start()  # the bulk write happens in SWMR mode
        self.f[name][...] = arr
        self.f.flush()

    def row_counts(self) -> dict[str, int]:
        """Rows of every dataset now (a checkpoint stores this to cut the file back on resume)."""
        return {n: int(ds.shape[0]) if ds.shape else 0 for n, ds in _datasets(self.f).items()}

    @_writes
    def commit(self, epoch: int) -> None:
        """Make epoch ``epoch`` visible to readers: write and flush its rows, then move the marker."""
        self.write_pending()  # ends in start(), which flushes
        self.f.attrs[names.EPOCHS_DONE] = epoch + 1
        self.f.flush()

    def close(self, status: str, reason: str = "") -> None:
        """Drop uncommitted rows, leave SWMR and record ``status`` (and the failure reason); a
        writer that abandoned its file leaves it as it is."""
        self._pending = {}
        if self.abandoned or not self.f.id.valid:
            return
        try:
            self._plain()  # new attributes cannot be written in SWMR mode
            self.f.attrs[names.STATUS] = status
            if reason:
                self.f.attrs[names.FAILURE] = reason
            self.f.flush()
        except (OSError, RuntimeError) as exc:
            if write_failed(exc):
                self.abandon(exc)
            raise
        finally:
            if self.f.id.valid:
                self.f.close()

    def has_room(self) -> bool:
        """Whether the disk has room to record a failure (``STATUS_ROOM``): on a full disk the
        writes of leaving SWMR and setting the status fail and can spoil a readable file."""
        try:
            return shutil.disk_usage(self.path.parent).free >= STATUS_ROOM
        except OSError:
            return False

    def abandon(self, exc: BaseException | None = None) -> None:
        """Leave the file exactly as it is on disk, as a kill would (every committed epoch stays
        readable, ``--resume`` continues it), and release every HDF5 handle without writing:
        after a failed write (``exc``) or when the disk is full, a close that writes fails again
        and can leave a file SWMR readers refuse. The handles in ``exc``'s frames go first."""
        self._pending = {}
        self.abandoned = True
        stop_writing(self.f)
        if exc is not None and exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)  # dataset handles of the failed write, before the file
        try:
            self.f.close()
        except (OSError, RuntimeError, ValueError):
            pass


def text_attr(v: Any) -> str:
    """An HDF5 string attribute as str (h5py may hand back bytes)."""
    return v.decode() if isinstance(v, bytes) else str(v)


def _is_scale(ds: h5py.Dataset) -> bool:
    return text_attr(ds.attrs.get("CLASS", b"")) == "DIMENSION_SCALE"


def _per_epoch(ds: h5py.Dataset) -> bool:
    """Whether axis 0 of ``ds`` is the epoch (its attached scale is ``/epoch``)."""
    return ds.ndim > 0 and ds.dims[0].label == names.EPOCH and ds.name != "/" + names.EPOCH


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    f.visititems(lambda n, o: out.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    return out


def open_h5(path: str | Path) -> h5py.File:
    """Open a run file for reading, with a clear error when it is not a gradlab run."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"run file {path} does not exist")
    try:
        f = open_read(path)
    except OSError as exc:
        text = " ".join(str(exc).split())
        if open_elsewhere(exc):  # the opener, not the file: never reported as damage
            raise RunFileError(f"{path} is open elsewhere with HDF5 access flags gradlab cannot share ({text}); "
                               f"close the other handle (h5py, xarray, another program) and open it again; the "
                               f"file itself is intact") from None
        if "already open for write" in str(exc) or "SWMR" in str(exc):
            raise RunFileError(f"{path} was left open by a gradlab run that was killed while creating datasets; "
                               f"continue it with gradlab run --resume (or clear it with h5clear -s)") from None
        if "truncated" in text:
            raise RunFileError(f"{path} is truncated ({text}): part of the file is missing; restore it from a copy "
                               f"or rerun it (gradlab run --overwrite)") from None
        raise RunFileError(f"{path} is not a readable HDF5 file ({text}); pass a run file written by gradlab run, "
                           f"or restore a damaged one from a copy") from None
    try:
        schema = text_attr(f.attrs.get(names.SCHEMA, ""))
    except (OSError, KeyError, RuntimeError) as exc:
        f.close()
        raise RunFileError(f"{path}: its root object is damaged ({' '.join(str(exc).split())}); restore it from a copy "
                           f"or rerun it (gradlab run --overwrite)") from None
    if not schema.startswith("gradlab.run/"):
        f.close()
        raise RunFileError(f"{path} is HDF5 but not a gradlab run (no schema attribute); "
                           f"pass a file written by gradlab run")
    return resolve(path, f, str(schema))

"""``gradlab.Tracker``: the dual-network tracker in your own training loop.

    tracker = gradlab.Tracker(model, out="runs/mine.h5", probes={"random": batches})
    with tracker:
        for epoch in range(epochs):
            tracker.epoch_start()          # freeze theta_e (parameters and buffers)
            for x, y in loader:            # your loop, untouched
                ...; opt.step(); tracker.step()   # step(): optional, for param stats every N steps
            tracker.epoch_end(lr=lr, train_loss=l, test_acc=a)  # probe passes at theta_e, commit

It writes the same run file as ``gradlab run`` (``gradlab.train.runner`` is itself a client
of this class): ``gradlab report``, ``gradlab inspect`` and ``gradlab.open_run`` read it.
The tracker never touches the training model's parameters, gradients, optimizer or RNG.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradlab import naming, registry
from gradlab import quantities as Q
from gradlab.data.probes import Batch, ProbeBatches, as_probe
from gradlab.errors import GradlabError, is_disk_full
from gradlab.runfile import names
from gradlab.runfile.epochlog import EpochLogger, epoch_values
from gradlab.track.layout import ParamLayout
from gradlab.track.options import Runtime, TrackOptions, json_config
from gradlab.track.paramstats import ParamStatsRecorder
from gradlab.track.probe import OWN, FrozenModel, LossFn, probe_pass
from gradlab.track.shard import NullWriter
from gradlab.track.stores import make_store

__all__ = ["Tracker", "TrackOptions", "Runtime", "ProbeBatches"]


def probe_attrs(p: ProbeBatches) -> dict[str, Any]:
    """The probe group's record of its inputs: how they were made, and unequal batch sizes."""
    out: dict[str, Any] = {}
    pre = p.preprocessing
    if pre is not None:
        out[names.PREPROCESSING] = pre.kind
        if pre.transform:
            out[names.TRANSFORM] = pre.transform
        if pre.mean is not None and pre.std is not None:
            out[names.INPUT_MEAN] = np.asarray(pre.mean, dtype=np.float64)
            out[names.INPUT_STD] = np.asarray(pre.std, dtype=np.float64)
    if p.batch_sizes is not None:
        out[names.BATCH_SIZES] = np.asarray(p.batch_sizes, dtype=np.int64)
    return out


def check_probe_names(probes: Mapping[str, Any]) -> None:
    """Every probe name is a valid run-file name (``gradlab.naming``), and a control's name
    (``random@class``) belongs to that control: the ``gradlab.orders.batches`` order of that name."""
    reserved = [registry.probe_name(registry.RANDOM, b) for b in registry.BATCHINGS if b != "contiguous"]
    for name, source in probes.items():
        built = getattr(getattr(source, "order", None), "name", None) == name
        naming.check_name("probe", name, reserved, is_reserved_ok=built)


class Tracker:
    """Probe every mini-batch gradient of fixed orders at each epoch's start parameters.

    - ``probes``: name -> fixed batches (a re-iterable of ``(x, y)`` or a ``ProbeBatches``);
      ``random`` is the control the phase summary compares every order with. Per-epoch orders
      (``gradlab.orders.gradient_batches``) are rebuilt at every theta_e after the fixed ones.
    - ``options``: a ``TrackOptions`` (measures, per_layer, store, param_stats, keep_grads, ...);
      its fields may be given as keywords instead (``store="disk"``), or to change ``options``.
    - ``loss_fn(output, target)``: mean loss of a batch (default cross-entropy).
    - ``config``: any JSON-able dict, stored in the run file as the ``config`` attribute;
      ``attrs``: more root attributes (provenance of the data, for example).
    - ``overwrite``: replace an existing ``out``; otherwise an existing file is an error.
    - ``runtime``: what ``gradlab run`` provides (torchrun shard, its lock, a progress bar).

    - ``quantities``: further tracked quantities to store beside gradlab's own
      (``gradlab.quantities.Quantity`` subclasses, a plugin's names or import paths).

    ``Tracker.resume`` continues a run file from a checkpoint's commit instead.

    Example: a linear model on 64 random images, probed at the start of each of 2 epochs.

        >>> import tempfile, torch, gradlab
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 3, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
        >>> batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> out = tempfile.mkdtemp() + "/mine.h5"
        >>> with gradlab.Tracker(model, out, probes={"random": batches}, param_stats="off") as tracker:
        ...     for epoch in range(2):
        ...         tracker.epoch_start()  # freezes theta_e
        ...         for xb, yb in batches:
        ...             opt.zero_grad()
        ...             torch.nn.functional.cross_entropy(model(xb), yb).backward()
        ...             opt.step()
        ...         stats = tracker.epoch_end(lr=0.1)  # one probe pass at theta_e, committed
        >>> with gradlab.open_run(out) as run:
        ...     run.epochs_done, run.probes, len(run.distances("random"))
        (2, ['random'], 8)
    """

    def __init__(self, model: nn.Module, out: str | Path,
                 probes: Mapping[str, Iterable[Batch] | ProbeBatches] | None = None,
                 options: TrackOptions | None = None, *, loss_fn: LossFn = F.cross_entropy,
                 config: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None,
                 overwrite: bool = False, runtime: Runtime | None = None, loggers: Sequence[EpochLogger] = (),
                 **option_changes: Any):
        self._setup(model, out, probes, TrackOptions.build(options, **option_changes), loss_fn, runtime, loggers)
        config = json_config(config)
        self.lock = self.runtime.lock if self.runtime.lock is not None or not self.dist.is_main else self._take_lock()
        try:
            self.writer = self._create(config, overwrite, attrs)
            self.stats = self._param_stats()
            self.stats.record_init()
        except BaseException:
            self._release()
            raise

    @classmethod
    def resume(cls, model: nn.Module, out: str | Path, probes: Mapping[str, Iterable[Batch] | ProbeBatches] | None,
               options: TrackOptions, *, epochs_done: int, rows: Mapping[str, int], run_id: str | None,
               config: Mapping[str, Any], loss_fn: LossFn = F.cross_entropy,
               runtime: Runtime | None = None, loggers: Sequence[EpochLogger] = ()) -> "Tracker":
        """Continue ``out`` at epoch ``epochs_done``: the file is cut back to the checkpoint's
        ``rows`` (dataset -> row count at its commit; ``RunWriter.row_counts``) and ``run_id``
        must match the file's. The caller restores the model, optimizer and RNG itself."""
        from gradlab.runfile.writer import RunWriter

        self = cls.__new__(cls)
        self._setup(model, out, probes, options.validate(), loss_fn, runtime, loggers)
        self.lock = self.runtime.lock
        self.writer = (RunWriter.reopen(self.out, epochs_done, dict(rows), json_config(config), run_id)
                       if self.dist.is_main else NullWriter())
        self.writer.described = self._described()
        self.epoch = epochs_done
        self.stats = self._param_stats()
        self.stats.resume_at(epochs_done, int(rows.get(names.PARAM_STEP, 0)))
        return self

    # ------------------------------------------------------------------ set-up
    def _setup(self, model: nn.Module, out: str | Path, probes: Mapping[str, Any] | None, options: TrackOptions,
               loss_fn: LossFn, runtime: Runtime | None, loggers: Sequence[EpochLogger] = ()) -> None:
        self.model, self.loss_fn, self.options = model, loss_fn, options
        for lg in loggers:
            if not isinstance(lg, EpochLogger):
                raise GradlabError(f"Tracker(loggers=...): {lg!r} has no log_epoch(epoch, values) and close(); "
                                   f"see gradlab.loggers")
        self.out = Path(out)
        self.runtime = runtime or Runtime()
        self.dist = self.runtime.shard
        check_probe_names(probes or {})  # before any batch is read: one line naming what a name may be
        probes = {n: as_probe(n, b) for n, b in (probes or {}).items()}
        # the reference probe first, then the other fixed orders, then the per-epoch ones: the reference
        # pass gives the full gradient that the common-target quantities and per-epoch orders need
        self.probes = dict(sorted(probes.items(), key=lambda item: (item[1].per_epoch, item[0] != options.reference)))
        registry.check_reference([n for n, p in self.probes.items() if p.needs_full], self.probes, options.reference)
        self.quantities = options.active_quantities(common=options.reference in self.probes)
        self.layout = ParamLayout.of(model)
        self._full: torch.Tensor | None = None  # this epoch's full gradient of the reference probe
        self._score_s = 0.0  # this epoch's time in per-epoch orders' scoring passes
        self.epoch = 0  # the next epoch to commit
        self._frozen: FrozenModel | None = None
        self._last_lr: float | None = None
        self._phase = 0
        self._closed = False
        # loggers see the epoch's rows once committed (rank 0 writes them; gradlab.runfile.epochlog)
        self.loggers = list(loggers) if self.dist.is_main else []
        self._rows: dict[str, Any] = {}

    def _param_stats(self) -> ParamStatsRecorder:
        o = self.options
        return ParamStatsRecorder(self.model, self.layout, o.param_stats, o.steps_per_epoch, self._append)

    def _append(self, name: str, row: Any, e: int) -> None:
        """``writer.append``, keeping the epoch's last row of each dataset for the loggers."""
        self.writer.append(name, row, e)
        if self.loggers:
            self._rows[name] = row

    def _take_lock(self) -> Any:
        """One writer per run file (``gradlab.runfile.lock``), before the file is touched."""
        import warnings

        from gradlab.runfile.lock import RunLock

        lock = RunLock(self.out).acquire()
        if lock.taken_over:
            warnings.warn(f"{self.out}: took over the lock of {lock.taken_over}, a writer that is no longer running",
                          stacklevel=3)
        return lock

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def _create(self, config: dict[str, Any], overwrite: bool, attrs: Mapping[str, Any] | None) -> Any:
        from gradlab.runfile import provenance
        from gradlab.runfile.writer import RunWriter

        if not self.dist.is_main:
            return NullWriter()  # torchrun: rank 0 writes for the job
        if self.out.exists() and not overwrite:
            raise GradlabError(f"{self.out} already exists; pass overwrite=True (--overwrite) or choose another out")
        device = self._device()
        prov = {**provenance.collect(device, self.options.seed), **self.dist.provenance(), **dict(attrs or {})}
        writer = RunWriter(self.out, config, prov, self.layout)
        writer.described = self._described()
        for name, p in self.probes.items():
            writer.add_probe(name, p.index, p.batch_score, p.score_label, p.batch_size, per_epoch=p.per_epoch,
                             attrs={**p.attrs, **probe_attrs(p)})
        return writer

    def _described(self) -> tuple[Any, ...]:
        """The run-file table rows of the quantities this run adds to gradlab's own (their attributes)."""
        from gradlab.runfile.annotate import quantity_rows

        return quantity_rows(q for q in self.quantities if q.name not in Q.QUANTITIES)

    def _device(self) -> torch.device:
        return next(iter(self.model.parameters())).device

    def start(self) -> None:
        """Enter SWMR mode (readers may open the file from here on). Called by ``epoch_start``."""
        self.writer.start()

    # ------------------------------------------------------------------ the loop
    def epoch_start(self) -> None:
        """Freeze theta_e: detached copies of every parameter and buffer, now."""
        self.start()
        self._frozen = FrozenModel(self.model, self.layout, self.loss_fn) if self.probes else None

    def step(self) -> None:
        """After each optimizer step (optional): parameter statistics every N steps."""
        self.stats.after_step()

    def epoch_end(self, before_commit: Callable[[], None] | None = None, **scalars: float) -> dict[str, float]:
        """Probe every order at theta_e, write the epoch's rows and commit them.

        ``scalars`` are per-epoch values stored as ``/train/lr``, ``/train/phase``,
        ``/train/loss`` (``train_loss``), ``/test/acc`` (``test_acc``), ...; see
        ``gradlab.runfile.names.scalar``. Without ``phase``, a new phase starts whenever
        ``lr`` changes. ``before_commit`` runs after the rows are on disk and before the
        commit marker moves (the runner's checkpoint). Returns each probe's mean l2 D.
        """
        if self._frozen is None and self.probes:
            raise GradlabError("Tracker.epoch_end() without epoch_start(): call epoch_start() before training "
                               "the epoch, so that theta_e is the epoch's start")
        naming.check_names("epoch_end key", scalars)  # before the probe passes: nothing is written
        e = self.epoch
        self.stats.end_epoch()
        t0 = time.perf_counter()
        self._score_s = 0.0
        means = {name: self._probe_epoch(name, p, e) for name, p in self.probes.items()}
        self._full = None
        for key, value in self._scalars(scalars, time.perf_counter() - t0).items():
            self._append(names.scalar(key), value, e)
        self.writer.write_pending()  # rows on disk, marker not moved yet
        if before_commit is not None:
            before_commit()
        self.writer.commit(e)
        self.epoch, self._frozen = e + 1, None
        self._log(e)
        return means

    def _log(self, e: int) -> None:
        """Hand the committed epoch's summary to every logger (``gradlab.runfile.epochlog``). A logger
        that fails is dropped with a warning: the epoch is committed, and training goes on."""
        if self.loggers:
            values = epoch_values(self._rows, self.layout.names)
            for lg in list(self.loggers):
                try:
                    lg.log_epoch(e, values)
                except Exception as exc:  # noqa: BLE001 (any logger's failure: report it, keep training)
                    import warnings

                    self.loggers.remove(lg)
                    warnings.warn(f"{lg!r} failed at epoch {e} ({type(exc).__name__}: {exc}); it gets no more "
                                  f"epochs. The run file has them all: gradlab export --tensorboard, or "
                                  f"gradlab.loggers.replay", stacklevel=3)
        self._rows = {}

    def _scalars(self, scalars: Mapping[str, float], probe_s: float) -> dict[str, float]:
        """The epoch's scalar rows: the caller's, plus phase (derived from lr) and probe time."""
        out = dict(scalars)
        if "phase" not in out and "lr" in out:
            lr = float(out["lr"])
            if self._last_lr is not None and lr != self._last_lr:
                self._phase += 1
            self._last_lr = lr
            out = {"lr": out.pop("lr"), "phase": self._phase, **out}
        out.setdefault("timing_probe_s", probe_s)
        if any(p.per_epoch for p in self.probes.values()):
            out.setdefault(names.TIMING_SCORE.replace("/", "_"), self._score_s)
        return out

    def _batches(self, probe: ProbeBatches, ks: Sequence[int] | None, desc: str) -> Iterator[Batch]:
        device = self._device()
        it = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in probe.batches(ks))
        progress = self.runtime.progress
        return progress(it, probe.num_batches if ks is None else len(ks), desc) if progress else it

    def _probe_epoch(self, name: str, probe: ProbeBatches, e: int) -> float:
        """One probe pass of ``probe`` at theta_e; appends its rows for epoch ``e``."""
        if probe.per_epoch:
            self._prepare(name, probe, e)
        o = self.options
        store = make_store(o.store, o.grad_dtype, **{**o.store_options(), "scratch_dir": o.scratch_dir or
                                                     str(self.out.parent)})
        keep = store.keeps(o.keep_grads, o.epochs is not None and e == o.epochs - 1)
        mine = self.dist.owned(probe.num_batches) if self.dist.active else None  # torchrun: whole batches

        def save(st: Any) -> None:
            what, rows = st.kept()
            rows = self.dist.gather_batches_to_main(rows, probe.num_batches)  # torchrun: every rank's share
            if rows is None:
                return
            if what == "sketch":
                self._append(names.sketch(name), rows.cpu().numpy(), e)
            else:
                self.writer.write_grads(names.grads(name, e), rows)

        common = o.reference in self.probes  # the reference's own pass: its own G is the target (self._full None)
        res = probe_pass(self._frozen, self._batches(probe, mine, f"probe {name}"), probe.num_batches, store,
                         o.measures, o.per_layer, save if keep else None, quantities=self.quantities,
                         shard=self.dist if self.dist.active else None,
                         replay=lambda: self._batches(probe, mine, f"probe {name} (recompute)"),
                         target=(self._full if name != o.reference else OWN) if common else None)
        for q in self.quantities:  # every active quantity's row (gradlab.quantities)
            self._append(names.quantity(name, q.name), res.stats.values[q.name], e)
        if name == o.reference:
            self._full = res.full
        return float(np.mean(res.stats.distance["l2"])) if "l2" in res.stats.distance else float("nan")

    def _prepare(self, name: str, probe: ProbeBatches, e: int) -> None:
        """Rebuild a per-epoch order at theta_e and append its index and batch scores as epoch e's rows."""
        t0 = time.perf_counter()
        probe.prepare(self._frozen, self._full)
        # int32 halves the largest per-epoch row (N images; 150 epochs of CIFAR-10 x 9 orders: 270 MB)
        self._append(names.probe_index(name), probe.index.astype(np.int32), e)
        self._append(names.batch_score(name), probe.batch_score, e)
        for key, value in probe.epoch_record().items():  # the search's cost and moves (gradlab.track.search)
            self._append(names.order_record(name, key), value, e)
        self._score_s += time.perf_counter() - t0

    # ------------------------------------------------------------------ closing
    def close(self, status: str = "complete", reason: str = "") -> None:
        """Drop uncommitted rows and record ``status`` ("complete" | "failed") in the file."""
        if not self._closed:
            self._closed = True
            try:
                self.writer.close(status, reason)
            finally:
                self._release()
                self._close_loggers()

    def _close_loggers(self) -> None:
        for lg in self.loggers:
            lg.close()
        self.loggers = []

    def close_failed(self, exc: BaseException, reason: str = "") -> None:
        """Close as ``failed`` because of ``exc`` (``reason``: the message to record, else ``exc``'s).

        A full disk (in the run file or elsewhere, the checkpoint) without room left to record
        the status leaves the run file as a kill would (``RunWriter.abandon``): a write that fails
        there can leave a file SWMR readers refuse. Its committed epochs stay readable and
        ``--resume`` continues it once there is space. (A write of the run file that failed has
        abandoned it already.)"""
        if is_disk_full(exc) and not self._closed and not self.writer.has_room():
            self._closed = True
            try:
                self.writer.abandon(exc)
            finally:
                self._release()
                self._close_loggers()
            return
        self.close("failed", reason or f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close("complete")
        else:
            self.close_failed(exc)

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

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradlab.errors import ConfigError, GradlabError
from gradlab.runfile import names
from gradlab.track.distances import check_measures
from gradlab.track.layout import ParamLayout
from gradlab.track.paramstats import ParamStatsRecorder
from gradlab.track.probe import FrozenModel, LossFn, probe_pass
from gradlab.track.stores import make_store

Batch = tuple[torch.Tensor, torch.Tensor]


class ProbeBatches:
    """One probe order: fixed batches plus what the run file records about them.

    ``batches(ks)`` yields batch k for each k in ``ks`` (all, in order, when None), on any
    device (the tracker moves them to the model's). ``gradlab.orders.batches`` builds one
    from an image dataset and a metric; any re-iterable of ``(x, y)`` is wrapped by
    ``as_probe``.
    """

    num_batches: int
    batch_size: int
    index: np.ndarray  # int64 [N] dataset indices in order (empty when unknown)
    batch_score: np.ndarray  # float64 [K]
    score_label: str
    # An order rebuilt at every theta_e (gradient-informed, ``gradlab.track.gradorders``): the
    # tracker calls ``prepare`` before its pass and stores index and batch_score per epoch.
    per_epoch = False
    needs_full = False  # prepare() needs the full gradient of the reference probe's pass
    attrs: Mapping[str, Any] = {}  # extra attributes of the probe's group in the run file (read only)

    def prepare(self, frozen: FrozenModel, full: torch.Tensor | None) -> None:
        """Rebuild the order at theta_e (``frozen``); ``full``: this epoch's full gradient."""

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[Batch]:
        raise NotImplementedError


class IterableProbe(ProbeBatches):
    """A user's re-iterable of ``(x, y)`` batches (a list, a non-shuffling DataLoader, ...).

    The batches must be the same at every epoch. Counting them costs one pass over the
    iterable at construction when it has no ``len``; batch scores are the batch numbers.
    """

    def __init__(self, name: str, source: Iterable[Batch]):
        if iter(source) is source:
            raise ConfigError(f"probe {name!r}: a one-shot iterator cannot be read at every epoch; "
                              f"pass a list or a DataLoader (shuffle=False)")
        sampler = getattr(source, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            raise ConfigError(f"probe {name!r}: its DataLoader shuffles, so its batches change every epoch; "
                              f"use shuffle=False (a probe order must be fixed)")
        self.source = source
        first = next(iter(source), None)
        if first is None:
            raise ConfigError(f"probe {name!r} has no batches")
        self.batch_size = len(first[1])
        self.num_batches = len(source) if hasattr(source, "__len__") else sum(1 for _ in source)  # type: ignore[arg-type]
        self.index = np.zeros(0, dtype=np.int64)
        self.batch_score = np.arange(self.num_batches, dtype=np.float64)
        self.score_label = "batch number"

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[Batch]:
        want = None if ks is None else set(ks)
        for k, (x, y) in enumerate(self.source):
            if want is None or k in want:
                yield x, y


def as_probe(name: str, source: Iterable[Batch] | ProbeBatches) -> ProbeBatches:
    return source if isinstance(source, ProbeBatches) else IterableProbe(name, source)


class Tracker:
    """Probe every mini-batch gradient of fixed orders at each epoch's start parameters.

    Arguments (all but ``model`` and ``out`` optional):

    - ``probes``: name -> fixed batches (a re-iterable of ``(x, y)`` or a ``ProbeBatches``);
      ``random`` is the control the phase summary compares every order with. Per-epoch orders
      (``gradlab.orders.gradient_batches``) are rebuilt at every theta_e after the fixed ones.
    - ``reference``: the probe whose pass gives the full gradient that per-epoch orders such
      as ``align`` need (default ``random``).
    - ``loss_fn(output, target)``: mean loss of a batch (default cross-entropy).
    - ``measures``: ``l2`` and/or ``cosine``; ``per_layer``: per-layer l2 distances.
    - ``store``: where batch gradients wait: ``memory`` | ``disk`` | ``recompute`` | ``sketch``.
    - ``param_stats``: ``"epoch"`` | ``"every:N"`` (needs ``step()`` after each optimizer step) | ``"off"``.
    - ``config``: any JSON-able dict, stored in the run file as the ``config`` attribute.
    - ``steps_per_epoch``: optimizer steps per epoch, for ``/params/epoch``; learnt from the
      first epoch's ``step()`` calls when not given.
    - ``overwrite``: replace an existing ``out``; otherwise an existing file is an error.
    """

    def __init__(self, model: nn.Module, out: str | Path,
                 probes: Mapping[str, Iterable[Batch] | ProbeBatches] | None = None,
                 loss_fn: LossFn = F.cross_entropy, measures: Sequence[str] = ("l2", "cosine"),
                 per_layer: bool = True, store: str = "memory", param_stats: str = "epoch",
                 config: Mapping[str, Any] | None = None, *, grad_dtype: str = "float32",
                 sketch_dim: int = 8192, scratch_dir: str | Path | None = None, keep_grads: str = "none",
                 seed: int = 0, steps_per_epoch: int | None = None, overwrite: bool = False,
                 epochs: int | None = None, attrs: Mapping[str, Any] | None = None, reference: str = "random",
                 _writer: Any = None, _dist: Any = None, _start_epoch: int = 0, _lock: Any = None,
                 _progress: Callable[[Iterator[Batch], int, str], Iterator[Batch]] | None = None):
        from gradlab.train.distributed import SINGLE

        self.model, self.loss_fn = model, loss_fn
        self.out = Path(out)
        self.measures, self.per_layer = list(measures), bool(per_layer)
        self.keep_grads, self.epochs = keep_grads, epochs
        self.dist = _dist or SINGLE
        self._progress = _progress
        self.probes = {n: as_probe(n, b) for n, b in (probes or {}).items()}
        # fixed orders first: the reference pass gives the full gradient the per-epoch orders need
        self.probes = dict(sorted(self.probes.items(), key=lambda item: item[1].per_epoch))
        self.reference = reference
        self._check(store, grad_dtype, sketch_dim, config)
        self._store_args = dict(name=store, dtype=grad_dtype, sketch_dim=sketch_dim, sketch_seed=seed,
                                scratch_dir=str(scratch_dir or self.out.parent))
        self.layout = ParamLayout.of(model)
        self._full: torch.Tensor | None = None  # this epoch's full gradient of the reference probe
        self._score_s = 0.0  # this epoch's time in per-epoch orders' scoring passes
        self.epoch = _start_epoch  # the next epoch to commit
        self._frozen: FrozenModel | None = None
        self._last_lr: float | None = None
        self._phase = 0
        self._closed = False
        self.lock = _lock if _lock is not None or not self.dist.is_main else self._take_lock()
        try:
            self.writer = _writer if _writer is not None else self._create(config, seed, overwrite, attrs)
            self.stats = ParamStatsRecorder(model, self.layout, param_stats, steps_per_epoch, self.writer.append)
            if _writer is None:
                self.stats.record_init()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------ set-up
    def _check(self, store: str, grad_dtype: str, sketch_dim: int, config: Mapping[str, Any] | None) -> None:
        check_measures(self.measures)
        make_store(store, grad_dtype, sketch_dim=sketch_dim)  # validates the name before any work
        if store == "sketch" and self.per_layer:
            raise ConfigError('store = "sketch" estimates whole-model distances only; pass per_layer=False')
        if self.keep_grads not in ("none", "last", "all"):
            raise ConfigError(f'keep_grads must be "none", "last" or "all", got {self.keep_grads!r}')
        if any(p.needs_full for p in self.probes.values()) and self.reference not in self.probes:
            needy = [n for n, p in self.probes.items() if p.needs_full]
            raise ConfigError(f"probes {needy} need this epoch's full gradient, which gradlab takes from the "
                              f"{self.reference!r} probe's pass; add a {self.reference!r} probe")
        try:
            json.dumps(dict(config or {}))
        except TypeError as exc:
            raise ConfigError(f"config must be JSON-able (numbers, strings, lists, dicts): {exc}") from None

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

    def _create(self, config: Mapping[str, Any] | None, seed: int, overwrite: bool,
                attrs: Mapping[str, Any] | None) -> Any:
        from gradlab.runfile.writer import RunWriter
        from gradlab.train import provenance
        from gradlab.train.distributed import NullWriter

        if not self.dist.is_main:
            return NullWriter()  # torchrun: rank 0 writes for the job
        if self.out.exists() and not overwrite:
            raise GradlabError(f"{self.out} already exists; pass overwrite=True (--overwrite) or choose another out")
        device = self._device()
        prov = {**provenance.collect(device, seed), **self.dist.provenance(), **dict(attrs or {})}
        writer = RunWriter(self.out, dict(config or {}), prov, self.layout)
        for name, p in self.probes.items():
            writer.add_probe(name, p.index, p.batch_score, p.score_label, p.batch_size, per_epoch=p.per_epoch,
                             attrs=p.attrs)
        return writer

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
        e = self.epoch
        self.stats.end_epoch()
        t0 = time.perf_counter()
        self._score_s = 0.0
        means = {name: self._probe_epoch(name, p, e) for name, p in self.probes.items()}
        self._full = None
        for key, value in self._scalars(scalars, time.perf_counter() - t0).items():
            self.writer.append(names.scalar(key), value, e)
        self.writer.write_pending()  # rows on disk, marker not moved yet
        if before_commit is not None:
            before_commit()
        self.writer.commit(e)
        self.epoch, self._frozen = e + 1, None
        return means

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
        return self._progress(it, probe.num_batches if ks is None else len(ks), desc) if self._progress else it

    def _probe_epoch(self, name: str, probe: ProbeBatches, e: int) -> float:
        """One probe pass of ``probe`` at theta_e; appends its rows for epoch ``e``."""
        if probe.per_epoch:
            self._prepare(name, probe, e)
        store = make_store(self._store_args["name"], self._store_args["dtype"],
                           **{k: v for k, v in self._store_args.items() if k not in ("name", "dtype")})
        last = self.epochs is not None and e == self.epochs - 1
        keep = store.keeps(self.keep_grads, last)
        mine = self.dist.owned(probe.num_batches) if self.dist.active else None  # torchrun: whole batches

        def save(st: Any) -> None:
            what, rows = st.kept()
            rows = self.dist.gather_batches_to_main(rows, probe.num_batches)  # torchrun: every rank's share
            if rows is None:
                return
            if what == "sketch":
                self.writer.append(names.sketch(name), rows.cpu().numpy(), e)
            else:
                self.writer.write_grads(names.grads(name, e), rows)

        res = probe_pass(self._frozen, self._batches(probe, mine, f"probe {name}"), probe.num_batches, store,
                         self.measures, self.per_layer, save if keep else None,
                         shard=self.dist if self.dist.active else None,
                         replay=lambda: self._batches(probe, mine, f"probe {name} (recompute)"))
        self._append_stats(name, res, e)
        if name == self.reference:
            self._full = res.full
        return float(np.mean(res.stats.distance["l2"])) if "l2" in res.stats.distance else float("nan")

    def _prepare(self, name: str, probe: ProbeBatches, e: int) -> None:
        """Rebuild a per-epoch order at theta_e and append its index and batch scores as epoch e's rows."""
        t0 = time.perf_counter()
        probe.prepare(self._frozen, self._full)
        # int32 halves the largest per-epoch row (N images; 150 epochs of CIFAR-10 x 9 orders: 270 MB)
        self.writer.append(names.probe_index(name), probe.index.astype(np.int32), e)
        self.writer.append(names.batch_score(name), probe.batch_score, e)
        self._score_s += time.perf_counter() - t0

    def _append_stats(self, name: str, res: Any, e: int) -> None:
        st, w = res.stats, self.writer
        for m, d in st.distance.items():
            w.append(names.distance(name, m), d, e)
        if st.layer_l2 is not None:
            w.append(names.layer_distance(name, "l2"), st.layer_l2, e)
        w.append(names.batch_norm(name), st.batch_norm, e)
        w.append(names.batch_loss(name), res.batch_loss, e)
        w.append(names.full_norm(name), st.full_norm, e)
        w.append(names.noise_scale(name), st.noise_scale, e)
        w.append(names.noise_g2(name), st.noise_g2, e)
        w.append(names.noise_trace(name), st.noise_trace, e)

    # ------------------------------------------------------------------ closing
    def close(self, status: str = "complete", reason: str = "") -> None:
        """Drop uncommitted rows and record ``status`` ("complete" | "failed") in the file."""
        if not self._closed:
            self._closed = True
            try:
                self.writer.close(status, reason)
            finally:
                self._release()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close("complete")
        else:
            self.close("failed", f"{type(exc).__name__}: {exc}")

"""``gradlab run``: train one network, probe it at each epoch start, write the run file.

Per epoch e: ``Tracker.epoch_start`` freezes theta_e -> train pass (updates theta) -> test
evaluation at theta_{e+1} -> ``Tracker.epoch_end``: one probe pass per probe order at theta_e,
rows, checkpoint, commit ``epochs_done``. The tracking itself lives in ``gradlab.track``.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gradlab.config import StudyConfig, lr_at, phase_of
from gradlab.data.datasets import BatchLoader, ImageSet, load_split
from gradlab.data.orders import Order, OrderBatches, ScoreFn, build_order, class_labels, compute_scores
from gradlab.data.segmentation import evaluate_segmentation, is_segmentation
from gradlab.errors import ConfigError, DiskFullError, GradlabError, RunFileError, is_disk_full
from gradlab.models import build_model
from gradlab.runfile import names
from gradlab.runfile.lock import RunLock
from gradlab.registry import LABELS, POLICIES, RANDOM, SHUFFLE, is_gradient_order, probe_name, random_cuts
from gradlab.track.gradorders import gradient_probes
from gradlab.track.layout import ParamLayout
from gradlab.track.options import Runtime, TrackOptions
from gradlab.track.tracker import Tracker
# resolve_device: also gradlab.train.runner's API
from gradlab.train.accel import accelerate, resolve_device, resolve_threads
from gradlab.train.checkpoint import (check_resume_config, checkpoint_path, load_checkpoint, rng_state,
                                     save_checkpoint, set_rng_state)
from gradlab.train.distributed import check_batch_size
from gradlab.train.loop import evaluate, seed_everything, train_epoch
from gradlab.train.nonfinite import NonFiniteGuard
from gradlab.train.policy import PolicyInput
from gradlab.usercode import is_import_path, load_object


def data_attrs(data: ImageSet) -> dict[str, Any]:
    """How the model's inputs were made, for the run file's root: the per-channel normalisation
    (fraction of 255), or the user's transform (``gradlab.data.inputs``)."""
    pre = data.preprocessing()
    out: dict[str, Any] = {names.DATA_PREPROCESSING: pre.kind}
    if pre.mean is not None and pre.std is not None:
        out[names.DATA_MEAN] = np.asarray(pre.mean, dtype=np.float64)
        out[names.DATA_STD] = np.asarray(pre.std, dtype=np.float64)
    if pre.transform:
        out[names.DATA_TRANSFORM] = pre.transform
    return out


@dataclass
class Study:
    """Everything built from a config before the first epoch."""

    cfg: StudyConfig
    device: torch.device
    train: ImageSet
    test: ImageSet
    model: nn.Module
    layout: ParamLayout
    train_order: Order | None  # None = reshuffle every epoch
    probes: list[Order] = field(default_factory=list)  # fixed orders, each cut of each
    gradient_orders: list[str] = field(default_factory=list)  # rebuilt at every theta_e (gradlab.track.gradorders)
    policy_cut: Order | None = None  # train.policy's metric, cut contiguously (None: policy "shuffle")


def build_study(cfg: StudyConfig, scores: ScoreFn = compute_scores, device: torch.device | None = None,
                threads: int | None = None) -> Study:
    """Load data, build the model (seeded) and the orders; validates names early.
    ``device`` overrides ``train.device`` (a torchrun rank's own device); ``threads`` overrides
    ``train.threads`` (a resumed run's recorded count)."""
    t = cfg.track
    if t.enabled:
        TrackOptions.from_study(cfg)  # validates the tracker's options before any work
    device = device or resolve_device(cfg.train.device)
    # before any work; recorded as cpu_threads
    torch.set_num_threads(threads if threads is not None else resolve_threads(cfg.train.threads))
    if is_import_path(cfg.model.name):
        load_object(cfg.model.name, "model.name")  # an unresolvable import path fails before the data loads
    train = load_split(cfg.data, train=True)
    # the test images are normalised as the training images are (user data: the train split's measured constants)
    test = dataclasses.replace(load_split(cfg.data, train=False), mean=train.mean, std=train.std)
    bs = cfg.train.batch_size
    if len(train) < bs:
        raise ConfigError(f"the training set has {len(train)} images, fewer than train.batch_size = {bs}; "
                          f"lower train.batch_size or raise data.subset")
    _check_task(cfg, train)
    seed_everything(cfg.train.seed)
    model = accelerate(build_model(cfg.model).to(device), cfg.train.amp, cfg.train.channels_last)
    layout = ParamLayout.of(model)
    train_order = None if t.order == SHUFFLE else build_order(t.order, train, bs, cfg.train.seed, scores)
    probes = _fixed_probes(cfg, train, train_order, scores) if t.enabled else []
    gradient = [p for p in t.probes if is_gradient_order(p)] if t.enabled else []
    if LABELS in POLICIES.check(cfg.train.policy).traits:  # before any work: one class label per image
        class_labels(train.labels, f'train.policy = "{cfg.train.policy}"', "choose another train.policy")
    policy_cut = (None if cfg.train.policy == SHUFFLE
                  else build_order(cfg.train.policy_metric, train, bs, cfg.train.seed, scores))
    return Study(cfg, device, train, test, model, layout, train_order, probes, gradient, policy_cut)


def _fixed_probes(cfg: StudyConfig, train: ImageSet, train_order: Order | None, scores: ScoreFn) -> list[Order]:
    """Every fixed probe order (the training order first in paper mode) in every cut of
    ``track.batching``; ``random`` has its own cut and the cuts that read labels
    (``registry.random_cuts``: ``random@class`` with ``class``)."""
    t, bs, seed = cfg.track, cfg.train.batch_size, cfg.train.seed
    names = ([train_order.name] if train_order else []) + [
        p for p in t.probes if not is_gradient_order(p) and (not train_order or p != train_order.name)]
    out: dict[str, Order] = {}
    for n in names:
        for cut in (random_cuts(t.batching) if n == RANDOM else t.batching):
            key = probe_name(n, cut)
            if key not in out:
                reuse = train_order is not None and n == train_order.name and cut == "contiguous"
                out[key] = train_order if reuse else build_order(n, train, bs, seed, scores, cut)
    return list(out.values())


def _check_task(cfg: StudyConfig, train: ImageSet) -> None:
    """Segmentation models need mask datasets and vice versa; classes must match the data."""
    from gradlab.models import SEGMENTATION_MODELS

    seg_data, seg_model = is_segmentation(train), cfg.model.name in SEGMENTATION_MODELS
    if seg_data != seg_model:
        what = "a segmentation" if seg_data else "a classification"
        fix = f"model.name = {sorted(SEGMENTATION_MODELS)[0]!r}" if seg_data else "a classification model"
        raise ConfigError(f"data.dataset = {cfg.data.dataset!r} is {what} set but model.name = {cfg.model.name!r} "
                          f"is not; use {fix}")
    if seg_data and cfg.model.num_classes != len(train.classes):
        raise ConfigError(f"data.dataset = {cfg.data.dataset!r} has {len(train.classes)} classes "
                          f"({', '.join(train.classes)}); set model.num_classes = {len(train.classes)}")


class Runner:
    """One study run, a client of ``gradlab.Tracker``. ``Runner(cfg).run()`` writes the run
    file; the trained model stays on ``self.study.model`` for callers that want it.

    Example: one epoch of a small CNN on 64 synthetic images (a few seconds on a CPU).

        >>> import gradlab
        >>> cfg = gradlab.load_config("studies/quickstart.toml", [
        ...     "data.subset=64", "data.test_subset=32", "train.epochs=1", "train.batch_size=32",
        ...     "train.milestones=[]", 'track.probes=["random"]', "output.heatmaps=false",
        ...     f'output.path="{tmp}/runner.h5"'])
        >>> out = gradlab.Runner(cfg, progress=False, log=lambda line: None).run()
        >>> with gradlab.open_run(out) as run:
        ...     run.status, run.epochs_done
        ('complete', 1)
    """

    def __init__(self, cfg: StudyConfig, overwrite: bool = False, progress: bool = True,
                 scores: ScoreFn = compute_scores, log: Callable[[str], None] = print, resume: bool = False):
        from gradlab.train import distributed

        self.dist, rank_device = distributed.setup(cfg.train.device)  # torchrun: join the job, else SINGLE
        if not self.dist.is_main:
            progress, log = False, (lambda s: None)  # rank 0 speaks and writes for the job
        self.cfg, self.overwrite, self.log = cfg, overwrite, log
        # bars only on a terminal; redirected to a file, one plain line per epoch instead
        # (tqdm would write hundreds of carriage-return lines there)
        self.progress = progress and sys.stderr.isatty()
        self.lines = progress and not self.progress
        self.out = Path(cfg.output.path)
        self.ckpt_path = checkpoint_path(self.out)
        self.resume_from: dict | None = None  # checkpoint to continue from
        self.lock: RunLock | None = None
        try:
            if self.dist.is_main:  # one writer per run file, before the file or checkpoint is touched
                self.lock = RunLock(self.out).acquire()
                if self.lock.taken_over:
                    self.log(f"gradlab run: took over the lock of {self.out} from {self.lock.taken_over}, "
                             f"which is no longer running")
            self._check_output(resume)
            self.resume_from = self._plan_resume() if resume else None
            self.study = build_study(cfg, scores, rank_device, threads=self._resume_threads())
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            self.dist.close()
            raise

    def _check_output(self, resume: bool) -> None:
        if self.overwrite and resume:
            raise GradlabError("--overwrite and --resume contradict each other; pass one")
        check_batch_size(self.cfg.train.batch_size, self.dist.world)
        if self.dist.any(self.dist.is_main and self.out.exists() and not self.overwrite and not resume):
            raise GradlabError(f"{self.out} already exists; pass --resume to continue it, --overwrite to replace "
                               f"it, or choose another --out")

    def _plan_resume(self) -> dict | None:
        """torchrun: rank 0 reads the run file and checkpoint, every rank gets its checkpoint."""
        failure: BaseException | None = None
        ck = None
        if self.dist.is_main and self.out.exists():
            try:
                ck = plan_resume(self.out, self.ckpt_path, self.cfg, self.log)
            except GradlabError as exc:
                failure = exc
        if self.dist.any(failure is not None):
            raise failure or GradlabError(f"rank 0 could not resume {self.out}; see its error")
        return self.dist.broadcast_object(ck)

    def _resume_threads(self) -> int | None:
        """``train.threads = "auto"`` on ``--resume``: the thread count the run recorded (``cpu_threads``),
        not a new measurement of the free cores, so that intra-op reductions, and with them every
        number, continue exactly as the run began. None: decide as usual."""
        recorded = (self.resume_from or {}).get(names.CPU_THREADS)
        if self.cfg.train.threads != "auto" or not recorded:
            return None
        self.log(f"gradlab run: --resume uses the {recorded} CPU thread(s) {self.out} was started with "
                 f"(train.threads = \"auto\")")
        return int(recorded)

    # ------------------------------------------------------------------ restore
    def _tracker(self, model: nn.Module, steps: int) -> tuple[Tracker, int]:
        """A fresh tracker (new run file) or one continuing the checkpoint's; returns the first epoch."""
        cfg, s, tr = self.cfg, self.study, self.cfg.track
        bar = (lambda it, n, desc: tqdm(it, total=n, desc=desc, leave=False)) if self.progress else None
        probes: dict = {o.name: OrderBatches(o, self.loader) for o in s.probes}
        if s.gradient_orders:
            probes.update(gradient_probes(self.loader, s.gradient_orders, tr.batching, tr.per_sample_mb << 20,
                                          tr.match_dim, cfg.train.seed, tr.per_sample, tr.search_passes))
        options = TrackOptions.from_study(cfg, steps)
        runtime = Runtime(shard=self.dist, lock=self.lock, progress=bar)
        ck = self.resume_from
        if ck is None:
            if self.overwrite and self.dist.is_main:
                self.ckpt_path.unlink(missing_ok=True)
            tracker = Tracker(model, self.out, probes, options, config=cfg.to_dict(), overwrite=self.overwrite,
                              attrs=data_attrs(s.train), runtime=runtime)
            self._describe_params(tracker)
            return tracker, 0
        start = int(ck["epoch"]) + 1
        if self.dist.is_main:
            self._check_free_space()
        tracker = Tracker.resume(model, self.out, probes, options, epochs_done=start, rows=ck["rows"],
                                 run_id=ck["run_id"], config=cfg.to_dict(), runtime=runtime)
        self.log(f"gradlab run: resuming {self.out} at epoch {start} of {cfg.train.epochs}")
        return tracker, start

    def _check_free_space(self) -> None:
        """Before a resume writes anything: HDF5 cannot even close a file cleanly on a full disk,
        so refuse up front, while every file is intact, when less than a checkpoint's size plus
        a margin is free (the next epoch writes a new checkpoint beside the old one)."""
        import shutil

        need = (self.ckpt_path.stat().st_size if self.ckpt_path.exists() else 0) + (4 << 20)
        free = shutil.disk_usage(self.out.parent).free
        if free < need:
            raise DiskFullError(f"disk full: {free / 2**20:.1f} MiB free beside {self.out}, the next epoch needs about "
                                f"{need / 2**20:.1f} MiB; free space, then continue with gradlab run --resume "
                                f"(committed epochs are kept)")

    def _describe_params(self, tracker: Tracker) -> None:
        if tracker.stats.enabled and self.dist.is_main:
            a = tracker.writer.f[names.PARAMS].attrs
            a["schedule"] = self.cfg.track.param_stats
            a["grad_norm"] = ("L2 norm per tensor of the raw minibatch gradient consumed by optimizer step `step` "
                              "(before weight decay and momentum); NaN at step 0")
            a["var"] = "population variance (ddof=0) of the tensor's elements"

    def _restore(self, model: nn.Module, opt: torch.optim.Optimizer, data_gen: torch.Generator) -> None:
        ck = self.resume_from
        if ck is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            set_rng_state(ck["rng"], data_gen)

    # ------------------------------------------------------------------ run
    def run(self) -> Path:
        cfg, s, dist = self.cfg, self.study, self.dist
        tc = cfg.train
        model, train_model = dist.prepare(s.model)  # DDP + SyncBatchNorm2d under torchrun
        loader = self.loader = BatchLoader(s.train, s.device, tc.batch_size)
        self.test_loader = BatchLoader(s.test, s.device, tc.batch_size)
        opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
        data_gen = torch.Generator().manual_seed(tc.seed)  # shuffles and augmentation only
        try:
            self._restore(model, opt, data_gen)
            tracker, start = self._tracker(model, len(loader))  # from here the tracker owns the lock
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise
        self._announce(loader)
        e = start
        try:
            bar = tqdm(range(start, tc.epochs), desc="epochs", disable=not self.progress, initial=start,
                       total=tc.epochs)
            for e in bar:
                t0 = time.perf_counter()
                row = self._epoch(e, tracker, model, train_model, opt, loader, data_gen)
                shown = {k: v for k, v in row.items() if k in ("train_loss", "train_acc", "test_acc", "test_miou")}
                bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
                if self.lines:
                    self.log(f"epoch {e + 1}/{tc.epochs}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}"
                                                                           for k, v in shown.items())
                             + f" ({time.perf_counter() - t0:.1f} s)")
                self._last = shown
        except BaseException as exc:
            self._fail(tracker, exc, e)
            if is_disk_full(exc):
                raise self._as_disk_full(exc, e) from exc
            raise
        tracker.close("complete")
        dist.barrier()  # the run file is complete before any rank returns
        dist.close()
        self._finish()
        return self.out

    def _announce(self, loader: BatchLoader) -> None:
        cfg, s, dist, tc = self.cfg, self.study, self.dist, self.cfg.train
        self.log(f"gradlab run: {cfg.model.name} ({s.layout.size:,} params, {len(s.layout)} tensors) on {s.device}, "
                 f"{cfg.data.dataset} {len(s.train)} train / {len(s.test)} test, {len(loader)} batches of "
                 f"{tc.batch_size}, probes {[o.name for o in s.probes] + s.gradient_orders or 'off'} -> {self.out}"
                 + (f" [torchrun: {dist.world} ranks, {dist.backend}]" if dist.active else ""))

    def _epoch(self, e: int, tracker: Tracker, model: nn.Module, train_model: nn.Module,
               opt: torch.optim.Optimizer, loader: BatchLoader, data_gen: torch.Generator) -> dict[str, float]:
        """Epoch e: freeze theta_e, train, evaluate at theta_{e+1}, probe at theta_e, checkpoint, commit."""
        cfg, s, dist, tc = self.cfg, self.study, self.dist, self.cfg.train
        lr = lr_at(e, tc)
        for group in opt.param_groups:
            group["lr"] = lr
        tracker.epoch_start()
        t0 = time.perf_counter()
        order = self._epoch_order(e, data_gen)
        guard = NonFiniteGuard(tc.on_nonfinite, s.device, e, lr)
        with dist.sync_batchnorm(model):
            loss, acc = train_epoch(train_model, opt, loader, order, data_gen if cfg.data.augment else None,
                                    self.progress, on_step=tracker.step if tracker.stats.enabled else None,
                                    guard=guard, dist=dist)
        bad = guard.finish()
        if bad:
            self.log(f"gradlab run: warning: {bad} batch(es) of epoch {e} had a NaN/Inf loss or gradient "
                     f"(train.on_nonfinite = \"continue\")")
        t_train = time.perf_counter() - t0
        t2 = time.perf_counter()
        test = self._evaluate(model)
        # train_steps: the optimizer steps of this epoch (the full batches of its order), so that runs whose
        # policies train on fewer images are compared at equal steps (gradlab results)
        row = {"lr": lr, "phase": phase_of(e, tc.milestones), "train_loss": loss, "train_acc": acc, **test,
               "train_steps": len(order) // tc.batch_size,
               "timing_train_s": t_train, "timing_eval_s": time.perf_counter() - t2}
        save = None
        if cfg.output.checkpoint and dist.is_main:  # checkpoint before the marker: see gradlab/train/checkpoint.py
            save = lambda: save_checkpoint(self.ckpt_path, {  # noqa: E731
                "epoch": e, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "rng": rng_state(data_gen), "config": cfg.to_dict(), "rows": tracker.writer.row_counts(),
                "run_id": tracker.writer.run_id})
        tracker.epoch_end(before_commit=save, **row)
        return row

    def _epoch_order(self, e: int, data_gen: torch.Generator) -> torch.Tensor:
        """The images epoch e trains on, in order: the training policy's choice of the cut's batches
        (gradlab.train.policy), else the fixed training order (paper mode) or a new permutation."""
        s, tc = self.study, self.cfg.train
        if s.policy_cut is not None:
            labels = s.train.labels
            cut = PolicyInput(s.policy_cut.index, tc.batch_size, s.policy_cut.batch_score,
                              None if labels is None else np.asarray(labels), tc.seed)
            chosen = POLICIES.load(tc.policy)(cut, phase_of(e, tc.milestones), data_gen)
            if chosen is not None:
                return chosen
        if s.train_order is not None:
            return torch.from_numpy(s.train_order.index)
        return torch.randperm(len(s.train), generator=data_gen)

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        """Test metrics at theta_{e+1}: loss and accuracy (segmentation: pixel accuracy, mIoU,
        mean class accuracy, from one confusion matrix; not sharded under torchrun)."""
        s = self.study
        if is_segmentation(s.test):
            seg = evaluate_segmentation(model, self.test_loader, self.cfg.model.num_classes)
            return {"test_loss": seg.loss, "test_acc": seg.pixel_acc, "test_miou": seg.miou,
                    "test_mean_acc": seg.mean_acc}
        test_loss, test_acc = evaluate(model, self.test_loader, self.dist)
        return {"test_loss": test_loss, "test_acc": test_acc}

    # ------------------------------------------------------------------ finish
    def _fail(self, tracker: Tracker, exc: BaseException, e: int) -> None:
        reason = self._as_disk_full(exc, e).args[0] if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"
        try:
            tracker.close_failed(exc, reason)
        except Exception as close_exc:  # noqa: BLE001 - e.g. still no space: the committed epochs are on disk
            self.log(f"gradlab run: could not record the failure in {self.out}: {close_exc}")
        self.dist.close()

    def _as_disk_full(self, exc: BaseException, e: int) -> DiskFullError:
        return DiskFullError(f"disk full while writing epoch {e} of {self.out} or its checkpoint ({exc}); free "
                             f"space, then continue with gradlab run --resume: epochs before {e} are kept")

    def _finish(self) -> None:
        """Heatmaps, the final numbers and the command to run next."""
        if not self.dist.is_main:
            return
        if self.cfg.output.heatmaps and (self.study.probes or self.study.gradient_orders):
            from gradlab.report import plots
            from gradlab.runfile.reader import open_run

            with open_run(self.out) as run:
                html_path = plots.write_heatmaps(run, self.out.with_suffix(".html"))
            self.log(f"heatmaps: {html_path}")
        last = getattr(self, "_last", {})
        if last:
            self.log(f"done: {self.out} ({self.cfg.train.epochs} epochs): "
                     + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in last.items()))
        self.log(f"next: gradlab report {self.out} --out {self.out.with_suffix('.report.html')}")


def run_study(cfg: StudyConfig, overwrite: bool = False, progress: bool = True,
              scores: ScoreFn = compute_scores, log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Run the study described by ``cfg`` and return the run file's path (``resume``: continue
    an interrupted run file from its checkpoint; a missing file starts fresh).

        >>> import gradlab
        >>> cfg = gradlab.load_config("studies/quickstart.toml", [
        ...     "data.subset=64", "data.test_subset=32", "train.epochs=1", "train.batch_size=32",
        ...     "train.milestones=[]", 'track.probes=["random"]', "output.heatmaps=false",
        ...     f'output.path="{tmp}/study.h5"'])
        >>> gradlab.run_study(cfg, progress=False, log=lambda line: None).name
        'study.h5'
    """
    return Runner(cfg, overwrite, progress, scores, log, resume=resume).run()


def plan_resume(out: Path, ckpt_path: Path, cfg: StudyConfig, log: Callable[[str], None]) -> dict | None:
    """Decide how to continue ``out``: the checkpoint to load, or ``None`` to start afresh
    (killed before the first epoch was committed). Refuses incompatible config changes."""
    from gradlab.runfile.writer import open_h5, text_attr

    threads = None
    try:
        with open_h5(out) as f:
            done = int(f.attrs[names.EPOCHS_DONE])
            status = text_attr(f.attrs[names.STATUS])
            threads = f.attrs.get(names.CPU_THREADS)
    except RunFileError as exc:
        if not ckpt_path.exists() and cfg.output.checkpoint:
            # every commit is preceded by a checkpoint: no checkpoint, no committed epoch to lose
            done, status = 0, "running"  # killed while being created
        elif not ckpt_path.exists():
            raise RunFileError(f"cannot resume {out}: {exc}; it has no checkpoint (output.checkpoint = false), so "
                               f"start again with --overwrite or restore the run file from a copy") from None
        else:  # killed in the instant it was out of SWMR: clear the flags (like h5clear -s) and look
            from gradlab.runfile.swmr import open_clearing_flags

            try:
                with open_clearing_flags(out) as f:
                    done, status = int(f.attrs[names.EPOCHS_DONE]), "running"
                    threads = f.attrs.get(names.CPU_THREADS)
            except (OSError, KeyError, RuntimeError):
                raise RunFileError(f"{out} is damaged and cannot be resumed ({exc}); restore the run file from a "
                                   f"copy and resume again (its checkpoint {ckpt_path} is intact), or start again "
                                   f"with --overwrite") from None
    if not ckpt_path.exists():
        if done == 0:
            log(f"gradlab run: {out} has no committed epoch and no checkpoint; starting it afresh")
            out.unlink()
            return None
        raise GradlabError(f"cannot resume {out}: it has {done} committed epoch(s) but no checkpoint {ckpt_path} "
                           f"(output.checkpoint = false?); start again with --overwrite")
    ck = load_checkpoint(ckpt_path)
    epoch = int(ck["epoch"])
    # the checkpoint of epoch e is written after e's rows and before the marker moves to e + 1
    if done not in (epoch, epoch + 1):
        raise GradlabError(f"cannot resume {out}: it has {done} committed epoch(s) but its checkpoint is of epoch "
                           f"{epoch}; the two do not belong together. Start again with --overwrite")
    check_resume_config(ck["config"], cfg.to_dict(), epoch + 1)
    if epoch + 1 >= cfg.train.epochs and status == "complete":
        raise GradlabError(f"{out} is already complete with {epoch + 1} epochs; raise train.epochs "
                           f"(--set train.epochs=N) to continue it")
    if threads is not None:
        ck[names.CPU_THREADS] = int(threads)  # train.threads = "auto" continues with it (Runner._resume_threads)
    return ck

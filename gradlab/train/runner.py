"""``gradlab run``: train one network, probe it at each epoch start, write the run file.

Per epoch e: freeze theta_e -> train pass (updates theta) -> one probe pass per probe order
at theta_e -> test evaluation at theta_{e+1} -> append rows -> commit ``epochs_done``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gradlab.train import provenance
from gradlab.train.accel import accelerate, resolve_device  # resolve_device: also gradlab.train.runner's API
from gradlab.config import StudyConfig, lr_at, phase_of
from gradlab.data.datasets import EVAL_BATCH, BatchLoader, ImageSet, load_split
from gradlab.train.distributed import SINGLE, Dist, NullWriter, check_batch_size
from gradlab.track.distances import check_measures
from gradlab.train.checkpoint import (check_resume_config, checkpoint_path, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from gradlab.errors import ConfigError, DiskFullError, GradlabError, RunFileError, is_disk_full
from gradlab.track.stores import GradStore, make_store
from gradlab.track.layout import ParamLayout
from gradlab.models import build_model
from gradlab.train.nonfinite import NonFiniteGuard
from gradlab.data.orders import SHUFFLE, Order, ScoreFn, build_order, compute_scores
from gradlab.track.paramstats import ParamStatsRecorder
from gradlab.data.segmentation import evaluate_segmentation, is_segmentation
from gradlab.runfile.writer import RunWriter
from gradlab.train.loop import evaluate, seed_everything, train_epoch
from gradlab.track.probe import FrozenModel, probe_pass


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
    probes: list[Order] = field(default_factory=list)


def build_study(cfg: StudyConfig, scores: ScoreFn = compute_scores, device: torch.device | None = None) -> Study:
    """Load data, build the model (seeded) and the orders; validates names early.
    ``device`` overrides ``train.device`` (a torchrun rank's own device)."""
    t = cfg.track
    check_measures(t.measures)
    make_store(t.grads, t.grad_dtype)  # validates the name before any work
    device = device or resolve_device(cfg.train.device)
    train = load_split(cfg.data, train=True)
    test = load_split(cfg.data, train=False)
    bs = cfg.train.batch_size
    if len(train) < bs:
        raise ConfigError(f"the training set has {len(train)} images, fewer than train.batch_size = {bs}; "
                          f"lower train.batch_size or raise data.subset")
    _check_task(cfg, train)
    seed_everything(cfg.train.seed)
    model = accelerate(build_model(cfg.model).to(device), cfg.train.amp, cfg.train.channels_last)
    layout = ParamLayout.of(model)
    train_order = None if t.order == SHUFFLE else build_order(t.order, train, bs, cfg.train.seed, scores)
    probes: list[Order] = []
    if t.enabled:
        names = ([train_order.name] if train_order else []) + [p for p in t.probes if not train_order or p != train_order.name]
        probes = [train_order if train_order and n == train_order.name else build_order(n, train, bs, cfg.train.seed, scores)
                  for n in names]
    return Study(cfg, device, train, test, model, layout, train_order, probes)


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
    """One study run. ``Runner(cfg).run()`` writes the run file; the trained model stays
    on ``self.study.model`` for callers that want it (tests, notebooks)."""

    def __init__(self, cfg: StudyConfig, overwrite: bool = False, progress: bool = True,
                 scores: ScoreFn = compute_scores, log: Callable[[str], None] = print, resume: bool = False):
        from gradlab.train import distributed

        self.dist, rank_device = distributed.setup(cfg.train.device)  # torchrun: join the job, else SINGLE
        if not self.dist.is_main:
            progress, log = False, (lambda s: None)  # rank 0 speaks and writes for the job
        self.cfg, self.overwrite, self.progress, self.log = cfg, overwrite, progress, log
        self.out = Path(cfg.output.path)
        self.ckpt_path = checkpoint_path(self.out)
        self.resume_from: dict | None = None  # checkpoint to continue from
        try:
            if overwrite and resume:
                raise GradlabError("--overwrite and --resume contradict each other; pass one")
            check_batch_size(cfg.train.batch_size, self.dist.world)
            if self.dist.any(self.dist.is_main and self.out.exists() and not overwrite and not resume):
                raise GradlabError(f"{self.out} already exists; pass --resume to continue it, --overwrite to replace "
                                   f"it, or choose another --out")
            # torchrun: rank 0 reads the run file and checkpoint, every rank gets its checkpoint
            failure: BaseException | None = None
            if resume and self.dist.is_main and self.out.exists():
                try:
                    self.resume_from = plan_resume(self.out, self.ckpt_path, cfg, log)
                except GradlabError as exc:
                    failure = exc
            if self.dist.any(failure is not None):
                raise failure or GradlabError(f"rank 0 could not resume {self.out}; see its error")
            self.resume_from = self.dist.broadcast_object(self.resume_from)
            self.study = build_study(cfg, scores, rank_device)
        except BaseException:
            self.dist.close()
            raise

    def run(self) -> Path:
        cfg, s, out = self.cfg, self.study, self.out
        tc = cfg.train
        device, dist = s.device, self.dist
        model, train_model = dist.prepare(s.model)  # DDP + SyncBatchNorm2d under torchrun
        loader = BatchLoader(s.train, device, tc.batch_size)
        test_loader = BatchLoader(s.test, device, tc.batch_size)
        opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
        data_gen = torch.Generator().manual_seed(tc.seed)  # shuffles and augmentation only
        fixed = torch.from_numpy(s.train_order.index) if s.train_order else None

        ck = self.resume_from
        if ck is not None:
            start = int(ck["epoch"]) + 1
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            set_rng_state(ck["rng"], data_gen)
            writer = (RunWriter.reopen(out, start, ck["rows"], cfg.to_dict(), ck["run_id"]) if dist.is_main
                      else NullWriter())
            stats = ParamStatsRecorder(model, s.layout, cfg.track.param_stats, len(loader), writer.append)
            stats.resume_at(start, int(ck["rows"].get("params/step", 0)))
            self.log(f"gradlab run: resuming {out} at epoch {start} of {tc.epochs}")
        else:
            start = 0
            if self.overwrite and dist.is_main:
                self.ckpt_path.unlink(missing_ok=True)
            prov = {**provenance.collect(device, tc.seed), **dist.provenance()}
            writer = RunWriter(out, cfg.to_dict(), prov, s.layout) if dist.is_main else NullWriter()
            stats = ParamStatsRecorder(model, s.layout, cfg.track.param_stats, len(loader), writer.append)
            stats.record_init()
            if stats.enabled and dist.is_main:
                writer.f["params"].attrs["schedule"] = cfg.track.param_stats
                writer.f["params"].attrs["grad_norm"] = ("L2 norm per tensor of the raw minibatch gradient consumed "
                                                         "by optimizer step `step` (before weight decay and "
                                                         "momentum); NaN at step 0")
                writer.f["params"].attrs["var"] = "population variance (ddof=0) of the tensor's elements"
            for o in s.probes:
                writer.add_probe(o.name, o.index, o.batch_score, o.score_label, tc.batch_size)
            writer.start()  # SWMR from here on: see store.RunWriter
        segmentation = is_segmentation(s.test)
        self.log(f"gradlab run: {cfg.model.name} ({s.layout.size:,} params, {len(s.layout)} tensors) on {device}, "
                 f"{cfg.data.dataset} {len(s.train)} train / {len(s.test)} test, {len(loader)} batches of "
                 f"{tc.batch_size}, probes {[o.name for o in s.probes] or 'off'} -> {out}"
                 + (f" [torchrun: {dist.world} ranks, {dist.backend}]" if dist.active else ""))
        e = start
        try:
            bar = tqdm(range(start, tc.epochs), desc="epochs", disable=not self.progress, initial=start,
                       total=tc.epochs)
            for e in bar:
                lr = lr_at(e, tc)
                for group in opt.param_groups:
                    group["lr"] = lr
                frozen = FrozenModel(model, s.layout) if s.probes else None
                t0 = time.perf_counter()
                order = fixed if fixed is not None else torch.randperm(len(s.train), generator=data_gen)
                guard = NonFiniteGuard(tc.on_nonfinite, device, e, lr)
                with dist.sync_batchnorm(model):
                    loss, acc = train_epoch(train_model, opt, loader, order, data_gen if cfg.data.augment else None,
                                            self.progress, on_step=stats.after_step if stats.enabled else None,
                                            guard=guard, dist=dist)
                stats.end_epoch()
                bad = guard.finish()
                if bad:
                    self.log(f"gradlab run: warning: {bad} batch(es) of epoch {e} had a NaN/Inf loss or gradient "
                             f"(train.on_nonfinite = \"continue\")")
                t_train = time.perf_counter() - t0
                t_probe = 0.0
                for o in s.probes:
                    t1 = time.perf_counter()
                    _probe_epoch(writer, frozen, loader, o, e, cfg, self.progress, dist)
                    t_probe += time.perf_counter() - t1
                t2 = time.perf_counter()
                extra: tuple[tuple[str, float], ...] = ()
                if segmentation:  # test/acc is pixel accuracy; mIoU and mean class accuracy as well
                    # (not sharded: every rank evaluates the whole test set, with identical results)
                    seg = evaluate_segmentation(model, test_loader, cfg.model.num_classes)
                    test_loss, test_acc = seg.loss, seg.pixel_acc
                    extra = (("test/miou", seg.miou), ("test/mean_acc", seg.mean_acc))
                else:
                    test_loss, test_acc = evaluate(model, test_loader, dist)
                t_eval = time.perf_counter() - t2
                for name, v in (("train/lr", lr), ("train/phase", phase_of(e, tc.milestones)), ("train/loss", loss),
                                ("train/acc", acc), ("test/loss", test_loss), ("test/acc", test_acc),
                                ("timing/train_s", t_train), ("timing/probe_s", t_probe), ("timing/eval_s", t_eval),
                                *extra):
                    writer.append(name, v, e)
                writer.write_pending()  # rows on disk, marker not moved yet
                if cfg.output.checkpoint and dist.is_main:  # checkpoint before the marker: see gradlab/checkpoint.py
                    save_checkpoint(self.ckpt_path, {
                        "epoch": e, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "rng": rng_state(data_gen), "config": cfg.to_dict(), "rows": writer.row_counts(),
                        "run_id": writer.run_id})
                writer.commit(e)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", test_acc=f"{test_acc:.3f}", **dict(
                    (k.split("/")[1], f"{v:.3f}") for k, v in extra))
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if is_disk_full(exc):
                reason = (f"disk full while writing epoch {e} of {out} or its checkpoint ({exc}); free space, then "
                          f"continue with gradlab run --resume: epochs before {e} are kept")
            try:
                writer.close("failed", reason)
            except Exception as close_exc:  # noqa: BLE001 - e.g. still no space: the committed epochs are on disk
                self.log(f"gradlab run: could not record the failure in {out}: {close_exc}")
            dist.close()
            if is_disk_full(exc):
                raise DiskFullError(reason) from exc
            raise
        writer.close("complete")
        dist.barrier()  # the run file is complete before any rank returns
        dist.close()
        if cfg.output.heatmaps and s.probes and dist.is_main:
            from gradlab.report import plots
            from gradlab.runfile.reader import open_run

            with open_run(out) as run:
                html_path = plots.write_heatmaps(run, out.with_suffix(".html"))
            self.log(f"heatmaps: {html_path}")
        return out


def run_study(cfg: StudyConfig, overwrite: bool = False, progress: bool = True,
              scores: ScoreFn = compute_scores, log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Run the study described by ``cfg`` and return the run file's path (``resume``: continue
    an interrupted run file from its checkpoint; a missing file starts fresh)."""
    return Runner(cfg, overwrite, progress, scores, log, resume=resume).run()


def plan_resume(out: Path, ckpt_path: Path, cfg: StudyConfig, log: Callable[[str], None]) -> dict | None:
    """Decide how to continue ``out``: the checkpoint to load, or ``None`` to start afresh
    (killed before the first epoch was committed). Refuses incompatible config changes."""
    from gradlab.runfile.writer import open_h5, text_attr

    try:
        with open_h5(out) as f:
            done = int(f.attrs["epochs_done"])
            status = text_attr(f.attrs["status"])
    except RunFileError:
        if not ckpt_path.exists():
            done, status = 0, "running"  # killed while being created: nothing was committed
        else:  # killed in the instant it was out of SWMR: clear the flags (like h5clear -s) and look
            from gradlab.runfile.swmr import open_clearing_flags

            try:
                with open_clearing_flags(out) as f:
                    done, status = int(f.attrs["epochs_done"]), "running"
            except (OSError, KeyError):
                raise RunFileError(f"{out} is damaged and cannot be resumed; start again with --overwrite") from None
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
    return ck


def _probe_epoch(writer: RunWriter, frozen: FrozenModel, loader: BatchLoader, order: Order, e: int,
                 cfg: StudyConfig, progress: bool, dist: Dist = SINGLE) -> None:
    tr = cfg.track
    store: GradStore = make_store(tr.grads, tr.grad_dtype, sketch_dim=tr.sketch_dim, sketch_seed=cfg.train.seed,
                                  scratch_dir=tr.scratch_dir or str(Path(cfg.output.path).parent))
    base = f"probes/{order.name}"
    keep = tr.keep_grads == "all" or (tr.keep_grads == "last" and e == cfg.train.epochs - 1)
    if not store.exact:  # sketches are small: kept every epoch, as /probes/<o>/sketch [E, K, d]
        keep = tr.keep_grads != "none"

    def save(st: GradStore) -> None:
        if not st.exact:
            sketches = dist.gather_batches_to_main(st.sketches.float(), order.num_batches)  # torchrun: all ranks
            if sketches is not None:
                writer.append(f"{base}/sketch", sketches.cpu().numpy(), e)
            return
        grads = torch.cat([c for _, c in st.chunks()] or [torch.empty(0, frozen.layout.size, dtype=st.dtype)])
        grads = dist.gather_batches_to_main(grads, order.num_batches)  # torchrun: every rank's share
        if grads is not None:
            writer.write_grads(f"{base}/grads/epoch_{e}", grads)

    idx = loader.batch_indices(torch.from_numpy(order.index))
    mine = dist.owned(len(idx))  # torchrun: whole batches k = rank, rank + world, ...; else all
    def batches(desc: str) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return tqdm((loader.get(idx[k]) for k in mine), total=len(mine), desc=desc, leave=False, disable=not progress)

    res = probe_pass(frozen, batches(f"probe {order.name}"), order.num_batches, store, tr.measures, tr.per_layer,
                     save if keep else None, shard=dist if dist.active else None,
                     replay=lambda: batches(f"probe {order.name} (recompute)"))
    st = res.stats
    for m, d in st.distance.items():
        writer.append(f"{base}/distance/{m}", d, e)
    if st.layer_l2 is not None:
        writer.append(f"{base}/layer_distance/l2", st.layer_l2, e)
    writer.append(f"{base}/batch_norm", st.batch_norm, e)
    writer.append(f"{base}/batch_loss", res.batch_loss, e)
    writer.append(f"{base}/full_norm", st.full_norm, e)
    writer.append(f"{base}/noise_scale", st.noise_scale, e)

"""Shared fixtures: tiny configs that run in seconds on 2 CPU cores."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from gradlab.config import config_from_dict, StudyConfig

# One thread count for every run a test makes, in this process and in the gradlab subprocesses
# it starts: train.threads = "auto" honours OMP_NUM_THREADS, and bit-for-bit comparisons (resume,
# tracker equivalence) need equal counts, which auto's measurement of the busy cores cannot promise.
os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def tiny_config(tmp_path, **sections) -> StudyConfig:
    """A study of a few hundred synthetic images and a small CNN; ``sections`` override keys."""
    raw = {
        "data": {"dataset": "synthetic", "subset": 256, "test_subset": 64, "augment": True},
        "model": {"name": "smallcnn", "norm": "bn"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "milestones": [1], "seed": 0, "device": "cpu"},
        "track": {"probes": ["intensity", "random"], "measures": ["l2", "cosine"]},
        "output": {"path": str(tmp_path / "run.h5"), "heatmaps": False},
    }
    for sec, values in sections.items():
        raw.setdefault(sec, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture
def tiny(tmp_path):
    return lambda **sections: tiny_config(tmp_path, **sections)


# ------------------------------------------------------------------------ real runs, trained once per session
# Several test files read the same small real run: each is trained once, in a tmp_path_factory folder.
# They are shared: read them, never change them; a test that modifies a run copies it first.

# 3 epochs of 4 batches of 32 that keep every epoch's raw gradients (train/test_resume.py's
# uninterrupted reference, track/test_tracker.py's stored gradients); tiny(**KEEP_ALL) is its config.
KEEP_ALL = {"data": {"subset": 128, "test_subset": 32}, "train": {"epochs": 3}, "track": {"keep_grads": "all"}}


@pytest.fixture(scope="session")
def keep_all_run(tmp_path_factory):
    from gradlab.train.runner import Runner

    cfg = tiny_config(tmp_path_factory.mktemp("keep_all"), **KEEP_ALL)
    return Path(Runner(cfg, progress=False, log=lambda m: None).run())


def _param_stats_run(tmp_path_factory, norm: str) -> Path:
    """2 epochs of 4 batches of 32, intensity + random probes, parameter statistics every 4 steps
    and the last epoch's raw gradients: the options a run file can describe (runfile/test_selfdescribing.py),
    the parameter plots (report/test_paramplots.py) and the report's parameter section (report/test_report.py)."""
    from gradlab.train.runner import Runner

    cfg = tiny_config(tmp_path_factory.mktemp(f"params_{norm}"), model={"norm": norm},
                      data={"subset": 128, "test_subset": 32}, train={"epochs": 2},
                      track={"param_stats": "every:4", "keep_grads": "last"})
    return Path(Runner(cfg, progress=False, log=lambda m: None).run())


@pytest.fixture(scope="session")
def bn_run(tmp_path_factory):
    return _param_stats_run(tmp_path_factory, "bn")


@pytest.fixture(scope="session")
def agc_run(tmp_path_factory):
    return _param_stats_run(tmp_path_factory, "agc")


# The quickstart, shrunk (512 images, 4 batches of 128, 3 epochs in 3 phases), run as a user runs it:
# ``gradlab run studies/quickstart.toml`` with these overrides; it writes the run file, its checkpoint
# and the heatmap page. Read by cli/test_cli.py and, through copies, by runfile/test_faults.py.
QUICKSTART_ARGS = ("--set", "data.subset=512", "--set", "data.test_subset=128", "--set", "train.epochs=3",
                   "--set", "train.milestones=[1, 2]")


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    from gradlab.cli import main

    out = tmp_path_factory.mktemp("quickstart") / "q.h5"
    assert main(["run", "studies/quickstart.toml", "--quiet", "--out", str(out), *QUICKSTART_ARGS]) == 0
    return out


def write_fake_run(path, *, epochs=6, commit=None, milestones=(3,), batches=20, layers=3, seed=0,
                   profiles=None, probes=("intensity", "random"), status="complete", schema=None, extra_rows=0,
                   per_epoch=(), common=None):
    """A run file with known distances, written through RunWriter without training anything.

    ``common``: ``{probe: factor}`` also writes the common-target quantities, D to the common
    target = factor * D (random's own D for ``random``, whatever the factor).

    ``profiles[probe][phase]`` is a length-``batches`` multiplier of D (batches in score
    order); D[e, k] = (2 / (e + 1)) * profile[k] * (1 + 1% noise), so each epoch has its
    own scale (as in real runs) and the best quantile per phase is known. ``commit``
    epochs are committed (default all); ``extra_rows`` more are written but never committed.
    Probes named in ``per_epoch`` are orders rebuilt every epoch: a new permutation and
    ascending batch scores (scaled by 1 / (e + 1)) are stored as each epoch's rows.
    """
    import numpy as np

    from gradlab import quantities as Q
    from gradlab.config import phase_of
    from gradlab.track.layout import ParamLayout
    from gradlab.runfile import names
    from gradlab.runfile.writer import RunWriter

    rng = np.random.default_rng(seed)
    commit = epochs if commit is None else commit
    layout = ParamLayout(tuple(f"l{i}.weight" for i in range(layers)), tuple((4, i + 2) for i in range(layers)),
                         tuple("conv.weight" for _ in range(layers)))
    config = {"train": {"epochs": epochs, "milestones": list(milestones), "lr": 0.1, "gamma": 0.1,
                        "batch_size": 8, "momentum": 0.9, "weight_decay": 0.0, "seed": seed, "device": "cpu"},
              "model": {"name": "fake", "norm": "bn"}, "data": {"dataset": "synthetic", "subset": batches * 8},
              "track": {"probes": list(probes), "measures": ["l2", "cosine"], "order": "shuffle"}}
    w = RunWriter(path, config, {"gradlab_version": "test", "seed": seed, "device": "cpu"}, layout)
    if schema is not None:
        w.f.attrs["schema"] = schema
    profiles = profiles or {}
    for p in probes:
        score = np.arange(batches, dtype=float) if p == "random" else np.sort(rng.uniform(0, 100, batches))
        w.add_probe(p, rng.permutation(batches * 8), score, "batch number" if p == "random" else f"{p} score", 8,
                    per_epoch=p in per_epoch, attrs={"batching": "stratified" if p.endswith("@strat") else "contiguous"})
    for e in range(commit + extra_rows):
        ph = phase_of(e, list(milestones))
        for p in per_epoch:
            w.append(names.probe_index(p), rng.permutation(batches * 8), e)
            w.append(names.batch_score(p), np.sort(rng.uniform(0, 1, batches)) / (e + 1), e)
        for p in probes:
            prof = np.asarray(profiles.get(p, {}).get(ph, np.ones(batches)), dtype=float)
            d = (2.0 / (e + 1)) * prof * (1 + 0.01 * rng.standard_normal(batches))
            known = {"distance_l2": d, "distance_cosine": d / 4,
                     "layer_distance_l2": np.outer(d, np.arange(1, layers + 1)) / layers, "batch_norm": d + 1.0,
                     "batch_loss": 2.3 / (e + 1) + 0.01 * rng.standard_normal(batches),
                     "full_norm": 1.0 / (e + 1), "noise_scale": 10.0 * (e + 1)}
            sizes = {"epoch": (), "batch": (batches,), "layer": (layers,)}
            if common is not None:
                known["common_distance_l2"] = d * (1.0 if p == "random" else common.get(p, 1.0))
            for q in Q.active(("l2", "cosine"), True, common=common is not None):  # every declared quantity
                shape = sum((sizes[dim] for dim in q.dims), ())
                row = known.get(q.name, np.full(shape, 1.0 / (e + 1)))  # others: a known placeholder
                w.append(names.quantity(p, q.name), row, e)
        for name, v in (("train/lr", 0.1 * 0.1 ** ph), ("train/phase", ph), ("train/loss", 2.0 / (e + 1)),
                        ("train/acc", 0.1 + 0.1 * e), ("test/loss", 2.1 / (e + 1)), ("test/acc", 0.1 + 0.09 * e)):
            w.append(name, v, e)
        if e < commit:
            w.commit(e)
    if status == "running":  # a writer that is still going (or was killed): no status change, no close marker
        w.write_pending()  # the uncommitted rows reach the file, as when a kill lands mid-commit
        w.f.flush()
        w.f.close()
    else:
        w.close(status, "RuntimeError: boom" if status == "failed" else "")
    return path


@pytest.fixture
def fake_run():
    return write_fake_run


def _sgd_epochs(tracker, model, batches, epochs, lr=lambda e: 0.1, phase=None, step=False, **end):
    """The training loop of a hand-written ``Tracker`` script: plain SGD (lr 0.1) over ``batches`` for
    ``epochs`` epochs, each between ``epoch_start`` and ``epoch_end`` (``lr(e)``, ``phase(e)`` when given,
    the epoch's mean train loss, and ``end``'s values: a callable of the epoch, or a constant);
    ``step=True`` also calls ``tracker.step()`` after every optimizer step."""
    import numpy as np

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for e in range(epochs):
        tracker.epoch_start()
        losses = []
        for xb, yb in batches:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if step:
                tracker.step()
        extra = {k: v(e) if callable(v) else v for k, v in end.items()}
        if phase is not None:
            extra["phase"] = phase(e)
        tracker.epoch_end(lr=lr(e), **({"train_loss": float(np.mean(losses))} | extra))


@pytest.fixture(scope="session")
def sgd_epochs():
    """``_sgd_epochs``: the loop the API tests, the quantity-extension tests and the logger tests share."""
    return _sgd_epochs

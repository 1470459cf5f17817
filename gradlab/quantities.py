"""Tracked quantities: what a probe pass stores per batch or per epoch, each declared once.

A quantity is one small class: its dataset name in the probe group, its dimensions, units
and description, the reductions of the batch gradients it needs, when it is on, and how it
is computed from those reductions (numpy only):

    class RelativeDistance(Quantity):
        name = "relative_distance"
        units = "1"
        description = "|g_k - G| / |g_k|: batch k's distance in units of its own gradient norm."
        needs = (SQ_DIST, SQ_NORM)

        def compute(self, r):
            return np.sqrt(r[SQ_DIST] / r[SQ_NORM])

Registration is explicit. gradlab's own quantities are the ``Quantity`` subclasses with a
``name`` declared in this module (``QUANTITIES``, collected once at import; a new built-in is its
declaration here and nothing else), and every run stores those its options switch on. Anyone
else's quantity is stored by the run that asks for it: ``Tracker(..., quantities=[RelativeDistance])``,
or ``track.quantities = ["relative_distance"]`` in a study file, by a name an installed plugin
adds (``gradlab.registry.QUANTITIES``, entry-point group ``gradlab.plugins``) or by an import path
``"package.module:RelativeDistance"``. Declaring a class registers nothing, so a test's quantity
leaves no trace in another test.

Everything else derives from the declaration: the distance pass computes only the
reductions the active quantities need (``gradlab.track.distances``), the tracker appends each
quantity's row, the writer annotates the dataset with the description and units
(``gradlab.runfile.annotate``), ``Run.quantity`` / ``Run.batch_table`` and ``gradlab export``
read it back from the file's own attributes, and the design doc's table lists the built-ins.

What the reductions measure: every one compares batch k's gradient g_k with G, the
batch-size-weighted mean of the K batch gradients *of the same probe pass* (that probe's own
mean gradient, at theta_e, in the model's training mode). For the ``random`` probe G is
nabla_e, the full gradient; for a sorted probe with BatchNorm it is that probe's own mean, which
differs from the random probe's nabla_e (docs/explanation/batchnorm.md).

A store that estimates D from sketches gives only ``SKETCHED`` reductions;
``check_store`` refuses a quantity that needs more (for example per-layer distances).

    >>> names = [q.name for q in active(["l2"], per_layer=False)]
    >>> "distance_l2" in names, "layer_distance_l2" in names  # per_layer=False: no per-layer distances
    (True, False)
    >>> QUANTITIES["batch_norm"].compute({SQ_NORM: np.array([4.0, 9.0])})
    array([2., 3.])
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from gradlab import naming, registry
from gradlab.errors import ConfigError, did_you_mean

# Units: gradients are derivatives of the loss with respect to the parameters, so their norms
# and distances carry "loss units per parameter" (the loss itself is dimensionless cross-entropy
# in nats, but the unit keeps a reader from comparing them with losses).
GRAD = "loss units per parameter"
GRAD2 = "(loss units per parameter)^2"

# Reductions of batch k's flat gradient g_k against the full gradient G, computed by the
# distance pass in one sequential read of the stored gradients (``gradlab.track.distances``):
SQ_DIST = "sq_dist"  # [K] |g_k - G|^2
DOT = "dot"  # [K] <g_k, G>
SQ_NORM = "sq_norm"  # [K] |g_k|^2
LAYER_SQ_DIST = "layer_sq_dist"  # [K, L] |g_k - G|^2 restricted to each parameter tensor
# ... against the common target T = the reference probe's full gradient at the same theta_e (the
# ``random`` probe's by default; ``TrackOptions.reference``). With BatchNorm each probe's own G is
# the mean gradient of its own partition, so a sorted cut's D is measured to a target of its own;
# T is the same for every probe of one epoch (``gradlab.track.distances``):
TARGET_SQ_DIST = "target_sq_dist"  # [K] |g_k - T|^2
TARGET_DOT = "target_dot"  # [K] <g_k, T>
TARGET_SQ_NORM = "target_sq_norm"  # float |T|^2
TARGET = frozenset({TARGET_SQ_DIST, TARGET_DOT, TARGET_SQ_NORM})
# ... and values of the probe pass itself:
FULL_SQ_NORM = "full_sq_norm"  # float |G|^2, G this probe pass's own mean gradient (not the random probe's)
BATCH_SIZE = "batch_size"  # [K] images in batch k
BATCH_LOSS = "batch_loss"  # [K] mean loss of batch k at theta_e
# [K, C] (float64, or None): batch k's targets in each class 0..C-1, C = the model output's classes
# (dimension 1); images for one label per image, pixels for masks; negative labels (cross-entropy's
# ignore_index) left out; a NaN row where a label is >= C; None for targets that are not integer
# class labels (soft or regression targets). ``gradlab.track.distances.ClassCounter`` counts them.
CLASS_COUNTS = "class_counts"
PASS_VALUES = (FULL_SQ_NORM, BATCH_SIZE, BATCH_LOSS, CLASS_COUNTS)
SKETCHED = frozenset({SQ_DIST, DOT, SQ_NORM, *TARGET, *PASS_VALUES})  # what an estimating store (sketch) gives

Reductions = Mapping[str, Any]  # reduction name -> its array (or float)


class Quantity:
    """One tracked quantity: declare ``name``, ``units``, ``description``, ``needs`` and ``compute``.

        >>> class Ratio(Quantity):
        ...     name, units, description = "ratio", "1", "|g_k - G| / |g_k|"
        ...     needs = (SQ_DIST, SQ_NORM)
        ...     def compute(self, r):
        ...         return np.sqrt(r[SQ_DIST] / r[SQ_NORM])
        >>> Ratio().compute({SQ_DIST: np.array([1.0, 4.0]), SQ_NORM: np.array([4.0, 4.0])})
        array([0.5, 1. ])
        >>> "ratio" in QUANTITIES  # declaring registers nothing: pass it to the Tracker that stores it
        False
    """

    concept: ClassVar[str] = "quantity"  # what an import path must name (gradlab.registry.QUANTITIES)
    name: ClassVar[str] = ""  # dataset name inside /probes/<o>/
    dims: ClassVar[tuple[str, ...]] = ("epoch", "batch")  # ("epoch",) per epoch; ("epoch", "batch", "layer")
    units: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()  # reductions (module constants above)
    when: ClassVar[str] = ""  # the option that turns it on ("" = always), for the docs' "present" column

    def enabled(self, measures: Iterable[str], per_layer: bool) -> bool:
        """Whether a tracker with these options stores it."""
        return True

    def compute(self, r: Reductions) -> Any:
        """This epoch's row: ``[K]`` (or ``[K, L]``) for per-batch dims, a float for ``("epoch",)``."""
        raise NotImplementedError


QUANTITIES: dict[str, Quantity] = {}  # gradlab's own, name -> instance: filled at the end of this module


def resolve(items: Iterable[Any], key: str = "track.quantities") -> list[Quantity]:
    """The quantities ``items`` name, beside gradlab's own: each a plugin's name or an import path
    (``gradlab.registry.QUANTITIES``), a ``Quantity`` subclass or an instance; one ``ConfigError``
    for anything else, a name without ``/`` missing, or a name already taken.

        >>> [q.name for q in resolve([])]
        []
    """
    out: list[Quantity] = []
    for item in items:
        obj = registry.QUANTITIES.load(item) if isinstance(item, str) else item
        q = obj() if isinstance(obj, type) and issubclass(obj, Quantity) else obj
        if not isinstance(q, Quantity):
            raise ConfigError(f"{key}: {item!r} is not a gradlab.quantities.Quantity (subclass it)")
        naming.check_name("quantity", q.name)  # one ConfigError saying what a name may be
        if q.name in QUANTITIES or q.name in {o.name for o in out}:
            raise ConfigError(f"{key}: a quantity named {q.name!r} is already stored; rename "
                              f"{type(q).__name__}")
        out.append(q)
    return out


def active(measures: Iterable[str], per_layer: bool, extra: Iterable[Quantity] = (),
           common: bool = False) -> list[Quantity]:
    """The quantities a tracker with these options computes: gradlab's own in declaration order,
    then ``extra`` (``resolve``), each as its ``enabled`` says. ``common``: the tracker has a
    reference probe, so the quantities that need the common target (``TARGET`` reductions) are on
    too; without one they are left out."""
    measures = list(measures)
    return [q for q in (*QUANTITIES.values(), *extra)
            if q.enabled(measures, per_layer) and (common or not TARGET.intersection(q.needs))]


def needed(quantities: Iterable[Quantity]) -> set[str]:
    return {r for q in quantities for r in q.needs}


# --------------------------------------------------------------------------- distance measures

class Measure(Quantity):
    """A distance between g_k and G, stored as ``distance_<measure>``; on when ``measures`` lists it."""

    measure: ClassVar[str] = ""
    when = "measures"

    @staticmethod
    def name_of(measure: str) -> str:
        """The quantity (dataset) name of a measure: ``distance_<measure>``."""
        return f"distance_{measure}"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.measure:
            cls.name = Measure.name_of(cls.measure)

    def enabled(self, measures, per_layer):
        return self.measure in measures


def measures() -> tuple[str, ...]:
    """Every declared distance measure (``track.measures`` choices)."""
    return tuple(q.measure for q in QUANTITIES.values() if isinstance(q, Measure))


def check_measures(names: Iterable[str]) -> None:
    known = measures()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown track.measures {unknown}{did_you_mean(unknown[0], known)}; "
                          f"choose from {', '.join(known)}")


class L2(Measure):
    measure, units = "l2", GRAD
    description = ("Euclidean distance: L2 norm of g_k - G_e, batch k's gradient minus the full gradient, at the "
                   "start of epoch e.")
    needs = (SQ_DIST,)
    when = ""  # the paper's measure: always stored by gradlab run

    def compute(self, r):
        return np.sqrt(r[SQ_DIST])


class Cosine(Measure):
    """Stored as a distance, not a similarity, so that small means close for every measure:
    0 = same direction, 1 = orthogonal, 2 = opposite."""

    measure, units = "cosine", "1"
    description = ("Cosine distance 1 - cos(g_k, G_e) between batch k's gradient and the full gradient at the "
                   "start of epoch e.")
    needs = (DOT, SQ_NORM, FULL_SQ_NORM)
    when = ""

    def compute(self, r):
        return cosine_distance(r[DOT], r[SQ_NORM], r[FULL_SQ_NORM])


def cosine_distance(dot: np.ndarray, sq_norm: np.ndarray, target_sq_norm: float) -> np.ndarray:
    """1 - <g_k, T> / (|g_k| |T|) from the reductions (NaN where a norm is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - dot / np.sqrt(sq_norm * target_sq_norm)


# --------------------------------------------------------------------------- the common target

class CommonL2(Quantity):
    """D to the common target: every probe's batches against the same vector, the reference
    probe's full gradient (``random``'s) at theta_e. Without batch statistics (no BatchNorm in
    training mode) a probe's own G is the same mean over the same images, so this equals
    ``distance_l2`` up to float rounding; with BatchNorm it separates how far g_k is from the
    common gradient from how far its own partition's mean moved."""

    name, units = "common_distance_l2", GRAD
    description = ("Euclidean distance |g_k - T_e| between batch k's gradient and the common target T_e, the "
                   "reference probe's (random's) full gradient at the start of epoch e; the same T_e for every "
                   "probe.")
    needs = (TARGET_SQ_DIST,)
    when = "a reference probe (random)"

    def compute(self, r):
        return np.sqrt(r[TARGET_SQ_DIST])


class CommonCosine(Quantity):
    name, units = "common_distance_cosine", "1"
    description = ("Cosine distance 1 - cos(g_k, T_e) between batch k's gradient and the common target T_e, the "
                   "reference probe's (random's) full gradient at the start of epoch e.")
    needs = (TARGET_DOT, SQ_NORM, TARGET_SQ_NORM)
    when = "a reference probe (random)"

    def compute(self, r):
        return cosine_distance(r[TARGET_DOT], r[SQ_NORM], r[TARGET_SQ_NORM])


# --------------------------------------------------------------------------- per batch

class LayerL2(Quantity):
    name, units, when = "layer_" + Measure.name_of("l2"), GRAD, "per_layer"
    dims = ("epoch", "batch", "layer")
    description = "Euclidean distance between batch k's and the full gradient, restricted to one parameter tensor."
    needs = (LAYER_SQ_DIST,)

    def enabled(self, measures, per_layer):
        return per_layer

    def compute(self, r):
        return np.sqrt(r[LAYER_SQ_DIST])


class BatchNorm(Quantity):
    name, units = "batch_norm", GRAD
    description = "L2 norm of g_k, batch k's gradient, at the start of epoch e."
    needs = (SQ_NORM,)

    def compute(self, r):
        return np.sqrt(r[SQ_NORM])


class BatchLoss(Quantity):
    name, units = "batch_loss", "loss units"
    description = "Loss of batch k at the parameters of the start of epoch e."
    needs = (BATCH_LOSS,)

    def compute(self, r):
        return r[BATCH_LOSS]


# --------------------------------------------------------------------------- label composition per batch

# What the label-composition quantities mean, in every description: the class mix of one batch's targets.
_LABELS = ("Classification: one label per image; segmentation: one per pixel (labels < 0, cross-entropy's "
           "ignore_index, left out). NaN where the targets are not integer class labels (soft or regression "
           "targets, or a model output without a class dimension).")


def class_shares(r: Reductions) -> np.ndarray:
    """``[K, C]``: each batch's share of its counted labels in each class (NaN rows where unknown)."""
    k = len(np.asarray(r[BATCH_SIZE]))
    counts = r.get(CLASS_COUNTS)
    if counts is None or np.shape(counts)[-1] == 0:
        return np.full((k, 1), np.nan)
    counts = np.asarray(counts, dtype=np.float64).reshape(k, -1)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / total, np.nan)


class LabelEntropy(Quantity):
    name, units = "label_entropy", "nats"
    description = ("Shannon entropy -sum_c p_c ln p_c of batch k's class mix, p_c the share of its labels in class "
                   "c: 0 for one class, ln C for C classes in equal shares. " + _LABELS)
    needs = (CLASS_COUNTS,)

    def compute(self, r):
        p = class_shares(r)
        log_p = np.log(p, out=np.zeros_like(p), where=p > 0)  # 0 ln 0 = 0; NaN rows stay NaN (NaN * 0)
        return 0.0 - (p * log_p).sum(axis=1)


class TopClassShare(Quantity):
    name, units = "top_class_share", "1"
    description = ("Share of batch k's labels in its most common class (fraction; 1 / C for C classes in equal "
                   "shares, 1 for one class). " + _LABELS)
    needs = (CLASS_COUNTS,)

    def compute(self, r):
        return np.max(class_shares(r), axis=1)


# --------------------------------------------------------------------------- per epoch

class FullNorm(Quantity):
    name, units, dims = "full_norm", GRAD, ("epoch",)
    description = "L2 norm of G_e, the full gradient, at the start of epoch e."
    needs = (FULL_SQ_NORM,)

    def compute(self, r):
        return math.sqrt(r[FULL_SQ_NORM])


def noise_scale_parts(sq_dists: np.ndarray, full_sq_norm: float, batch_size: int, n: int) -> tuple[float, float]:
    """``(tr(Sigma), |G_true|^2)``, the unbiased estimates the simple noise scale divides.

    The K batches partition n = K*m examples, each drawn without replacement, so
    E|g_k - G|^2 = tr(Sigma) (n - m) / (m n) with Sigma the per-example covariance
    (1/(n-1) normalised). Hence tr(Sigma) = m n / (n - m) * mean_k |g_k - G|^2, and since
    E|G|^2 = |G_true|^2 + tr(Sigma)/n, |G_true|^2 = |G|^2 - tr(Sigma)/n (McCandlish et al. 2018).
    Only meaningful for batches drawn at random (the ``random`` probe).
    """
    tr_sigma = batch_size * n / (n - batch_size) * float(np.mean(sq_dists))
    return tr_sigma, full_sq_norm - tr_sigma / n


def noise_scale(sq_dists: np.ndarray, full_sq_norm: float, batch_size: int, n: int) -> float:
    """Simple gradient noise scale B_simple = tr(Sigma) / |G_true|^2 from ``noise_scale_parts``;
    NaN when K < 2, n <= m, or the |G_true|^2 estimate is <= 0 (noise exceeds signal)."""
    if n <= batch_size or len(sq_dists) < 2:
        return math.nan
    tr_sigma, g2 = noise_scale_parts(sq_dists, full_sq_norm, batch_size, n)
    return tr_sigma / g2 if g2 > 0 else math.nan


def noise_scale_parts_unequal(sq_dists: np.ndarray, full_sq_norm: float, sizes: np.ndarray) -> tuple[float, float]:
    """``noise_scale_parts`` for K batches of unequal sizes m_k partitioning n = sum m_k examples.

    Each batch is a sample without replacement, so E|g_k - G|^2 = tr(Sigma) (n - m_k) / (m_k n);
    summing over k, tr(Sigma) = sum_k |g_k - G|^2 / sum_k (n - m_k) / (m_k n) is unbiased, and
    |G_true|^2 = |G|^2 - tr(Sigma)/n as before. With equal sizes it is the same estimator
    (``noise_parts`` keeps the equal-size formula there, so those results stay bit-identical).
    """
    m = np.asarray(sizes, dtype=np.float64)
    n = float(m.sum())
    tr_sigma = float(np.sum(sq_dists)) / float(np.sum((n - m) / (m * n)))
    return tr_sigma, full_sq_norm - tr_sigma / n


def noise_parts(r: Reductions) -> tuple[float, float]:
    """``(tr(Sigma), |G_true|^2)`` of one pass, for equal or unequal batch sizes; NaN when K < 2
    or a batch holds every example (no spread to measure)."""
    sizes = np.asarray(r[BATCH_SIZE], dtype=np.int64)
    n, sq = int(sizes.sum()), r[SQ_DIST]
    if len(sq) < 2 or n <= int(sizes.max()):
        return math.nan, math.nan
    if np.all(sizes == sizes[0]):  # the equal-size formula, bit for bit as before
        return noise_scale_parts(sq, r[FULL_SQ_NORM], int(sizes[0]), n)
    return noise_scale_parts_unequal(sq, r[FULL_SQ_NORM], sizes)


class NoiseG2(Quantity):
    name, units, dims = "noise_g2", GRAD2, ("epoch",)
    description = "Unbiased estimate of the squared norm of the true gradient (the noise scale's denominator)."
    needs = (SQ_DIST, FULL_SQ_NORM, BATCH_SIZE)

    def compute(self, r):
        return noise_parts(r)[1]


class NoiseTrace(Quantity):
    name, units, dims = "noise_trace", GRAD2, ("epoch",)
    description = ("Unbiased estimate of tr(Sigma), the trace of the per-example gradient covariance (the noise "
                   "scale's numerator).")
    needs = (SQ_DIST, FULL_SQ_NORM, BATCH_SIZE)

    def compute(self, r):
        return noise_parts(r)[0]


class NoiseScale(Quantity):
    """B_simple = tr(Sigma) / |G_true|^2; the ratio of one epoch is biased and often undefined, so
    the run file keeps both components and readers average them over epochs before dividing."""

    name, units, dims = "noise_scale", "examples", ("epoch",)
    description = ("Simple noise scale noise_trace / noise_g2 (NaN where noise_g2 <= 0); average both over epochs "
                   "before dividing.")
    needs = (SQ_DIST, FULL_SQ_NORM, BATCH_SIZE)

    def compute(self, r):
        trace, g2 = noise_parts(r)
        return trace / g2 if g2 > 0 else math.nan


# --------------------------------------------------------------------------- the store rule

def check_store(store: str, quantities: Iterable[Quantity]) -> None:
    """A store that estimates D (trait ``estimate``: ``sketch``) gives only ``SKETCHED``
    reductions; refuse, before any work, a quantity that needs another (per-layer distances)."""
    if registry.ESTIMATE not in registry.STORES.check(store).traits:
        return
    for q in quantities:
        missing = set(q.needs) - SKETCHED
        if missing:
            exact = " | ".join(n for n in registry.STORES if n not in registry.STORES.having(registry.ESTIMATE))
            fix = "set track.per_layer = false (per_layer=False)" if q.when == "per_layer" else f"leave {q.name} out"
            raise ConfigError(f'track.grads = "{store}" estimates whole-model distances only, and {q.name} needs '
                              f"{', '.join(sorted(missing))}; {fix}, or use an exact store ({exact})")


# gradlab's own quantities: every named Quantity subclass declared above, in declaration order.
QUANTITIES.update((c.name, c()) for c in list(globals().values())
                  if isinstance(c, type) and issubclass(c, Quantity) and c.name)

"""``TrackOptions``: how a ``Tracker`` probes and what it stores, validated once.

    opts = TrackOptions(store="disk", per_layer=False, param_stats="every:50")
    tracker = gradlab.Tracker(model, "runs/mine.h5", probes, opts)
    # the same, with the fields as keywords:
    tracker = gradlab.Tracker(model, "runs/mine.h5", probes, store="disk", per_layer=False)

``Runtime`` carries what the process around the tracker provides: the torchrun shard, the
run file's lock when the caller took it, and a progress wrapper (``gradlab run`` passes all
three; a user's loop passes none).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from gradlab import quantities as Q
from gradlab import registry
from gradlab.config import Schedule, StudyConfig
from gradlab.errors import ConfigError, did_you_mean
from gradlab.track.shard import SINGLE, Shard

KEEP_GRADS = ("none", "last", "all")


@dataclass(frozen=True)
class TrackOptions:
    """How a ``Tracker`` probes and what it stores, validated once (``validate``; an unknown or bad
    value is one ``ConfigError`` naming the fix). Every field is also a keyword of ``Tracker``;
    ``from_study`` maps a study file's ``[track]`` keys onto them (``track.grads`` is ``store``).

        >>> import gradlab
        >>> opts = gradlab.TrackOptions(store="disk", per_layer=False, param_stats="every:50")
        >>> opts.validate().store, "distance_cosine" in [q.name for q in opts.active_quantities()]
        ('disk', True)
        >>> gradlab.TrackOptions.build(opts, measures=["l2"]).measures
        ('l2',)
    """

    measures: tuple[str, ...] = ("l2", "cosine")  # distance measures (gradlab.quantities.measures())
    per_layer: bool = True  # per-layer l2 distances [E, K, L]
    store: str = "memory"  # where batch gradients wait: memory | disk | recompute | sketch (registry.STORES)
    grad_dtype: str = "float32"  # float32 | float16 | bfloat16: the stored batch gradients
    sketch_dim: int = 8192  # CountSketch buckets per batch gradient (store = "sketch")
    scratch_dir: str | None = None  # the disk store's scratch folder; None: the run file's folder
    keep_grads: str = "none"  # none | last | all: raw batch gradients kept in the run file
    param_stats: str = "epoch"  # epoch | every:N | off (gradlab.track.paramstats)
    reference: str = registry.RANDOM  # the probe whose pass gives the full gradient that some orders need
    seed: int = 0  # the sketch's hash seed; recorded as provenance
    steps_per_epoch: int | None = None  # for /params/epoch; learnt from the first epoch's step() calls
    epochs: int | None = None  # the run's length, when known (keep_grads = "last")
    # further quantities to store beside gradlab's own (gradlab.quantities.resolve): Quantity subclasses or
    # instances, plugin names or import paths "package.module:Name"
    quantities: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "measures", tuple(self.measures))  # a list from a config stays immutable
        object.__setattr__(self, "quantities", tuple(self.quantities))

    def validate(self) -> "TrackOptions":
        """Every field's value and the rules between them, as one ``ConfigError`` naming the fix."""
        Q.check_measures(self.measures)
        registry.STORES.check(self.store)
        Q.check_store(self.store, self.active_quantities(common=True))
        if self.grad_dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f'grad_dtype must be "float32", "float16" or "bfloat16", got {self.grad_dtype!r}')
        if self.keep_grads not in KEEP_GRADS:
            raise ConfigError(f'keep_grads must be "none", "last" or "all", got {self.keep_grads!r}')
        if self.sketch_dim < 1:
            raise ConfigError(f"sketch_dim must be >= 1, got {self.sketch_dim}")
        Schedule.parse(self.param_stats)
        return self

    def active_quantities(self, common: bool = False) -> list[Q.Quantity]:
        """The tracked quantities these options switch on: gradlab's own, then ``quantities``;
        ``common``: with the reference probe among the probes, the common-target ones too."""
        return Q.active(self.measures, self.per_layer, Q.resolve(self.quantities, "quantities"), common)

    def store_options(self) -> dict[str, Any]:
        """Keyword options of ``gradlab.track.stores.make_store``."""
        return dict(sketch_dim=self.sketch_dim, sketch_seed=self.seed, scratch_dir=self.scratch_dir)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, base: "TrackOptions | None" = None, **changes: Any) -> "TrackOptions":
        """``base`` (default: the defaults) with ``changes``; an unknown field is one ``ConfigError``."""
        for key in changes:
            if key not in cls.fields():
                raise ConfigError(f"Tracker: unknown option {key!r}{did_you_mean(key, cls.fields())}; "
                                  f"options are {', '.join(cls.fields())}")
        return dataclasses.replace(base or cls(), **changes).validate()

    @classmethod
    def from_study(cls, cfg: StudyConfig, steps_per_epoch: int | None = None) -> "TrackOptions":
        """The options of a study file's ``[track]`` (and ``[train]``) tables."""
        t = cfg.track
        return cls(measures=tuple(t.measures), per_layer=t.per_layer, store=t.grads, grad_dtype=t.grad_dtype,
                   sketch_dim=t.sketch_dim, scratch_dir=t.scratch_dir or None, keep_grads=t.keep_grads,
                   param_stats=t.param_stats, seed=cfg.train.seed, steps_per_epoch=steps_per_epoch,
                   epochs=cfg.train.epochs, quantities=tuple(t.quantities)).validate()


Progress = Callable[[Iterator[Any], int, str], Iterator[Any]]


@dataclass
class Runtime:
    """What the process around a tracker provides (``gradlab run`` sets these; a user's loop need not).

    - ``shard``: this process's place in a torchrun job (``gradlab.train.distributed.Dist``);
      rank 0 writes the run file, the others hold a ``NullWriter``.
    - ``lock``: the run file's single-writer lock when the caller took it (the runner takes it
      before it touches the checkpoint); None: the tracker takes it.
    - ``progress(iterator, total, description)``: wraps each probe pass (a tqdm bar).
    """

    shard: Shard = field(default_factory=lambda: SINGLE)
    lock: Any = None
    progress: Progress | None = None


def json_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` as a dict that ``json.dumps`` accepts, or one ``ConfigError``."""
    import json

    try:
        json.dumps(dict(config or {}))
    except TypeError as exc:
        raise ConfigError(f"config must be JSON-able (numbers, strings, lists, dicts): {exc}") from None
    return dict(config or {})

"""Typed study configuration.

A study file is TOML with the sections below. Every key is checked: unknown keys get the
nearest valid key suggested, wrong types get the expected type. ``--set a.b=v`` overrides
take a TOML value (``--set train.milestones=[2,4]``); a bare word is read as a string.
"""
from __future__ import annotations

import dataclasses
import re
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gradlab import quantities, registry
from gradlab.errors import ConfigError, did_you_mean
from gradlab.usercode import is_import_path


@dataclass
class DataConfig:
    # a built-in dataset (gradlab.registry.DATASETS), or an import path "package.module:load" to a
    # function taking this DataConfig, returning (train, test)
    dataset: str = "synthetic"
    root: str = "data"  # CIFAR-10 lives in <root>/cifar-10-batches-py
    subset: int = 0  # training images used, first N of the set; 0 = all
    test_subset: int = 0  # test images evaluated each epoch; 0 = all
    augment: bool = True  # train-time random crop (pad 4) + horizontal flip; probes never augment
    download: bool = True  # let torchvision try the real CIFAR-10 download when missing
    tile: int = 64  # segmentation sets (buildings, segfolder): tile side in pixels, a multiple of 16
    # your own preprocessing of one raw image, "package.module:attr" naming the transform object itself
    # (a torchvision Compose or any callable, as in your training loop); imagefolder and import-path
    # datasets only. Training, test and probe inputs are transform(image); "" = normalise with the
    # data's own per-channel mean/std (gradlab.data.inputs)
    transform: str = ""


@dataclass
class ModelConfig:
    # a built-in network (gradlab.registry.MODELS), or an import path "package.module:factory" to a
    # callable taking this ModelConfig and returning an nn.Module
    name: str = "smallcnn"
    norm: str = "bn"  # bn | agc | none (see gradlab.models.norm.NORMS)
    series_weight: float = 1.0  # weight mechanism alpha on series-connection concat input (dpn*, resunet)
    parallel_weight: float = 1.0  # beta on the parallel position (dpn*, resunet); see the model docstrings
    num_classes: int = 10  # classes (segmentation: pixel classes, 2 for building / background)
    width: int = 32  # resunet base channels (level i has width * 2^i); other models have fixed widths


@dataclass
class TrainConfig:
    epochs: int = 6  # training epochs; each starts with a theta_e snapshot and ends with the probe passes
    batch_size: int = 128  # images per batch, in training and in every probe order (global batch under torchrun)
    lr: float = 0.1  # SGD learning rate of phase 0; epoch e uses lr x gamma^phase(e)
    milestones: list[int] = field(default_factory=lambda: [2, 4])  # LR x gamma at these epochs
    gamma: float = 0.1  # factor applied to the learning rate at each milestone
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay (L2 penalty on every parameter)
    seed: int = 0  # initialisation, data order, augmentation and the random probe order; recorded in the run file
    # several seeds: one run file per seed, <stem>-s<seed>.h5 (also --seeds 0,1,2); [] = just train.seed
    seeds: list[int] = field(default_factory=list)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # torch CPU threads: "auto" (the cores free at start, measured over 0.3 s: 1 on a busy 2-core
    # machine, where 2 threads collapse beside another process; OMP_NUM_THREADS wins) or a number
    # (gradlab.train.accel.resolve_threads)
    threads: str | int = "auto"
    # NaN/Inf loss or gradient: "stop" ends the run (status failed, earlier epochs kept, the
    # message names epoch and batch); "continue" trains on and logs the count of bad batches
    on_nonfinite: Literal["stop", "continue"] = "stop"
    # bf16 autocast of the forward in training, evaluation and probe passes (gradlab.train.accel):
    # ~2x faster on tensor-core GPUs; the loss, gradients and stored D stay float32/64.
    # Legal on CPU too (slower there: use it for CUDA).
    amp: Literal["none", "bf16"] = "none"
    channels_last: bool = False  # NHWC memory format for model and inputs: faster convs under bf16 on CUDA
    # which images and batches each epoch trains on (gradlab.registry.POLICIES, gradlab.train.policy):
    # "shuffle" (every image, order from track.order); "class" (class-stratified random batches, redrawn
    # every epoch); "batches" (every batch of policy_metric's contiguous cut, a new random visiting order
    # each epoch: the homogeneity control); R1 "drop_extreme_batches" / "drop_extreme_images" (the outer
    # 10% at each end dropped) with the step-matched controls "drop_random_batches" / "drop_random_images";
    # R2 "upper_quartile_first" (phase 0 on the upper-quartile images) with "random_quarter_first"
    policy: str = "shuffle"
    policy_metric: str = "intensity"  # the image metric whose contiguous cut the policies other than shuffle read


@dataclass
class TrackConfig:
    enabled: bool = True  # false: plain training, no probe passes (the baseline for benchmarks)
    order: str = "shuffle"  # training order: "shuffle", or a metric name (paper mode)
    # probe orders: "random" (the control and the unit), metrics (intensity, hsv, edges, lpips), and
    # gradient-informed orders rebuilt at every theta_e (loss, gradnorm, align, proj, match, search); a
    # plugin's names and import paths "package.module:Name" of your own Metric or GradientOrder too
    probes: list[str] = field(default_factory=lambda: ["intensity", "random"])
    # how each sorted order is cut into batches: "contiguous" (the paper's), "stratified" (batch k =
    # sorted positions k, k+K, ...; stored as /probes/<order>@strat) and/or "class" (sorted within
    # each class, every batch holds every class in the dataset's proportion at one within-class
    # quantile; /probes/<order>@class). random is cut only by "class": random@class, the
    # class-stratified random control (gradlab.registry.random_cuts)
    batching: list[str] = field(default_factory=lambda: ["contiguous"])
    # gradient-informed orders: how the per-sample scores are taken. "fast": per-layer factors of one
    # forward/backward per chunk (gradlab.track.fastsample; memory follows activations, not parameters);
    # "vmap": per-sample gradients by torch.func (the reference, gradlab.track.persample)
    per_sample: Literal["fast", "vmap"] = "fast"
    # MB of per-sample work the scoring pass holds at once, on top of its chunk's activations. "fast": one
    # layer's unfolded input and Gram matrices or per-sample gradient block per image; chunks of at most
    # train.batch_size images. "vmap": every parameter's per-sample gradient, MB * 2^20 / (12 bytes x P) images
    per_sample_mb: int = 256
    match_dim: int = 256  # CountSketch buckets of each per-sample gradient for the "match" order
    # the "search" order's cost bound, in probe passes per epoch: at most search_passes x K train-mode batch
    # gradients at each theta_e, its starts included (gradlab.track.search)
    search_passes: int = 10
    grads: str = "memory"  # where batch gradients wait for the epoch end (gradlab.registry.STORES)
    # dtype of the stored batch gradients (memory and disk stores); 16 bits: half the memory, rounded gradients
    grad_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    # distance measures, each stored as /probes/<o>/distance_<m> (gradlab.quantities.measures())
    measures: list[str] = field(default_factory=lambda: ["l2", "cosine"])
    per_layer: bool = True  # per-layer l2 distance [E, K, L]
    # further tracked quantities to store, beside gradlab's own: names that installed plugins add
    # (gradlab.registry.QUANTITIES) or import paths "package.module:Name" of Quantity subclasses
    quantities: list[str] = field(default_factory=list)
    keep_grads: Literal["none", "last", "all"] = "none"  # per-batch gradients kept in the run file
    # per-tensor mean / variance / gradient norm -> /params/* (gradlab.track.paramstats): "epoch" (at init and
    # after each epoch), "every:N" (also after every N-th optimizer step), or "off"
    param_stats: str = "epoch"
    # with grads = "sketch": number of CountSketch buckets d per batch gradient; memory K*d*8 bytes,
    # relative error of D about 0.5/sqrt(d)..1/sqrt(d) (about 0.5 % at 8192, see gradlab/track/sketch.py)
    sketch_dim: int = 8192
    # with grads = "disk": directory of the scratch HDF5 file (K*P*itemsize bytes per probe pass,
    # removed after each pass); "" = the run file's directory
    scratch_dir: str = ""


@dataclass
class OutputConfig:
    path: str = "runs/run.h5"  # the run file (HDF5); --out overrides it
    heatmaps: bool = True  # write <path without .h5>.html with the distance heatmaps
    checkpoint: bool = True  # write <path without .h5>.ckpt.pt each epoch end, for --resume


@dataclass
class StudyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "StudyConfig":
        """Cross-field checks that types alone cannot express."""
        t = self.train
        if t.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {t.epochs}")
        if t.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {t.batch_size}")
        if not t.lr > 0 or not math.isfinite(t.lr):
            raise ConfigError(f"train.lr must be a finite number > 0, got {t.lr}")
        for key in ("gamma", "momentum", "weight_decay"):
            v = getattr(t, key)
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"train.{key} must be a finite number >= 0, got {v}")
        if sorted(t.milestones) != list(t.milestones) or any(m < 1 for m in t.milestones):
            raise ConfigError(f"train.milestones must be increasing epochs >= 1, got {t.milestones}")
        if self.data.subset < 0 or self.data.test_subset < 0:
            raise ConfigError("data.subset and data.test_subset must be >= 0 (0 = all)")
        _check_dataset_name(self.data.dataset)
        _check_transform(self.data)
        _check_orders(self.track)
        _check_policy(t, self.track)
        Schedule.parse(self.track.param_stats)
        if t.threads != "auto" and (isinstance(t.threads, str) or t.threads < 1):
            raise ConfigError(f'train.threads must be "auto" or a number >= 1, got {t.threads!r}')
        if self.track.sketch_dim < 1:
            raise ConfigError(f"track.sketch_dim must be >= 1, got {self.track.sketch_dim}")
        if self.track.enabled:
            quantities.check_measures(self.track.measures)
            extra = quantities.resolve(self.track.quantities)
            quantities.check_store(self.track.grads,
                                   quantities.active(self.track.measures, self.track.per_layer, extra))
        return self


def _check_orders(t: TrackConfig) -> None:
    """Probe and training orders, batchings and the gradient orders' needs (``gradlab.registry``)."""
    if len(set(t.probes)) != len(t.probes):
        raise ConfigError(f"track.probes lists an order twice: {t.probes}")
    for p in t.probes:
        registry.check_probe(p)
    if registry.is_gradient_order(t.order):
        raise ConfigError(f"track.order = {t.order!r} is rebuilt from the probe's gradients at every epoch and "
                          f"cannot be a training order; list it in track.probes instead")
    if t.order not in (registry.SHUFFLE, registry.RANDOM) and registry.METRICS.find(t.order) is None:
        raise ConfigError(f"track.order must be {registry.SHUFFLE!r}, {registry.RANDOM!r} or a metric "
                          f"({', '.join(registry.METRICS)}), got {t.order!r}"
                          f"{did_you_mean(t.order, (registry.SHUFFLE, *registry.METRICS))}")
    bad = [b for b in t.batching if b not in registry.BATCHINGS]
    if bad or not t.batching or len(set(t.batching)) != len(t.batching):
        raise ConfigError(f"track.batching must list {' and/or '.join(registry.BATCHINGS)} once each, got {t.batching}")
    if t.enabled:
        registry.check_reference(registry.needs_full(t.probes), t.probes, key="track.probes")
    if t.per_sample_mb < 1 or t.match_dim < 1:
        raise ConfigError("track.per_sample_mb and track.match_dim must be >= 1")
    if t.search_passes < 1:
        raise ConfigError(f"track.search_passes must be >= 1 (probe passes of batch gradients), got {t.search_passes}")


def _check_policy(t: TrainConfig, track: TrackConfig) -> None:
    """A training policy other than shuffle reads its own metric's cut, so the training order is shuffle."""
    registry.POLICIES.check(t.policy)
    if t.policy != registry.SHUFFLE:
        registry.METRICS.check(t.policy_metric)
        if track.order != registry.SHUFFLE:
            raise ConfigError(f'train.policy = "{t.policy}" chooses the batches itself, but track.order = '
                              f'"{track.order}" also sets a training order; set track.order = "shuffle"')


def _check_dataset_name(name: str) -> None:
    """A built-in dataset or an import path; checked before anything loads."""
    if not is_import_path(name):
        registry.DATASETS.check(name)


def _check_transform(d: DataConfig) -> None:
    """``data.transform``: an import path, for the user's own data (imagefolder or an import path)."""
    if not d.transform:
        return
    if not is_import_path(d.transform):
        raise ConfigError(f'data.transform = {d.transform!r} is not an import path; name your transform object as '
                          f'"package.module:name"')
    if d.dataset != "imagefolder" and not is_import_path(d.dataset):
        raise ConfigError(f"data.transform applies to your own data (data.dataset = \"imagefolder\" or an import "
                          f"path), not to the built-in {d.dataset!r}; remove data.transform")


_EVERY = re.compile(r"^every:([1-9][0-9]*)$")


@dataclass(frozen=True)
class Schedule:
    """When to record: ``every`` steps (0 = only at epoch ends), or never."""

    enabled: bool
    every: int

    @classmethod
    def parse(cls, spec: str) -> "Schedule":
        if spec == "off":
            return cls(False, 0)
        if spec == "epoch":
            return cls(True, 0)
        m = _EVERY.match(spec)
        if not m:
            raise ConfigError(f'track.param_stats must be "epoch", "every:N" (N >= 1 optimizer steps) or "off", '
                              f"got {spec!r}")
        return cls(True, int(m.group(1)))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys: {"train": {"lr": 0.1}} -> {"train.lr": 0.1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def phase_of(epoch: int, milestones: list[int]) -> int:
    """Training phase of a 0-based epoch: the number of LR milestones reached."""
    return sum(1 for m in milestones if epoch >= m)


def lr_at(epoch: int, train: TrainConfig) -> float:
    """Learning rate of a 0-based epoch: lr x gamma^phase (step schedule)."""
    return train.lr * train.gamma ** phase_of(epoch, train.milestones)


# --------------------------------------------------------------------------- loading

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. threads: str | int
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be a {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {_type_name(tp)}, got {value!r}{did_you_mean(value, choices)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r}")  # programming error


def _unknown(key: str, valid: list[str]) -> ConfigError:
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    extra = did_you_mean(key.rsplit(".", 1)[-1], [v.rsplit(".", 1)[-1] for v in valid], prefix) \
        or f" (valid: {', '.join(valid)})"
    return ConfigError(f"unknown config key {_q(key)}{extra}")


def _q(text: str) -> str:
    """A user-supplied string quoted for a one-line message (newlines and controls escaped)."""
    return json.dumps(text, ensure_ascii=False)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{prefix}] must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise _unknown(full, [f"{prefix}.{n}" if prefix else n for n in names])
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, full)
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into a key path and a TOML-parsed value (bare words are strings)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {_q(item)}")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {_q(item)}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        value = text
    return key.split("."), value


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> StudyConfig:
    """Build and validate a config from a nested dict plus ``key=value`` overrides."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a study must be a table of sections, got {type(raw).__name__}")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides or []:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {_q(item)}: {_q(part)} is not a table")
        node[path[-1]] = value
    return _build(StudyConfig, raw, "").validate()


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw table of a study file, with one clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid TOML: nested too deeply") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study TOML file, apply ``overrides`` (``"section.key=VALUE"``, a TOML value, as
    ``--set`` takes them) and validate it: one ``ConfigError`` naming the fix, before any work.

        >>> cfg = load_config("studies/quickstart.toml", ["train.epochs=2", 'track.probes=["hsv", "random"]'])
        >>> cfg.train.epochs, cfg.track.probes, cfg.model.name
        (2, ['hsv', 'random'], 'smallcnn')
        >>> load_config("studies/quickstart.toml", ["train.epoch=2"])
        Traceback (most recent call last):
        gradlab.errors.ConfigError: unknown config key "train.epoch" (did you mean "train.epochs"?)
    """
    raw = read_toml(path)
    raw.pop("variants", None)  # named override lists, see gradlab.train.variants
    return config_from_dict(raw, overrides)

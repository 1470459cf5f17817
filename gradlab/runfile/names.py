"""Every dataset, group and attribute name of the run file, in one place.

(``gradlab.runfile.annotate`` holds each dataset's dimensions, units and description.)

Writers and readers build names through this module only, so the layout documented in
docs/design.md ("The run file") has one source. Per-epoch datasets grow along axis 0 and
only rows ``< epochs_done`` are committed.
"""
from __future__ import annotations

from gradlab import quantities as Q

# ---------------------------------------------------------------- root attributes
SCHEMA = "schema"
CONFIG = "config"
STATUS = "status"
FAILURE = "failure"
EPOCHS_DONE = "epochs_done"  # the commit marker
RUN_ID = "run_id"
RESUMES = "resumes"
DATA_MEAN = "data_mean"  # per-channel normalisation the model saw (fraction of 255), when known
DATA_STD = "data_std"
CPU_THREADS = "cpu_threads"  # provenance: torch's intra-op threads; --resume with threads = "auto" reuses it
DATA_TRANSFORM = "data_transform"  # repr of data.transform, the user's preprocessing of every image
DATA_PREPROCESSING = "data_preprocessing"  # how gradlab run made the model's inputs (gradlab.data.inputs)

# ---------------------------------------------------------------- static groups
LAYERS = "layers"
LAYER_NAME = "layers/name"
LAYER_KIND = "layers/kind"
LAYER_NUMEL = "layers/numel"
LAYER_SHAPE = "layers/shape"
PROBES = "probes"
PARAMS = "params"

# ---------------------------------------------------------------- dimension scales (gradlab.runfile.annotate)
EPOCH = "epoch"  # [E] epoch numbers; grows with the per-epoch datasets (may run ahead of epochs_done)
LAYER = "layer"  # [L] parameter tensor names (a copy of /layers/name at the root, where every group sees it)
PARAMETER = "parameter"  # [P] a dimension without values (netCDF convention): the flat gradient's elements

# ---------------------------------------------------------------- per-epoch scalars [E]
TRAIN_LR = "train/lr"
TRAIN_PHASE = "train/phase"
TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"
TRAIN_STEPS = "train/steps"  # optimizer steps of epoch e (gradlab run; a training policy may train on fewer images)
TEST_LOSS = "test/loss"
TEST_ACC = "test/acc"
TEST_MIOU = "test/miou"
TEST_MEAN_ACC = "test/mean_acc"
TIMING_TRAIN = "timing/train_s"
TIMING_PROBE = "timing/probe_s"
TIMING_EVAL = "timing/eval_s"
TIMING_SCORE = "timing/score_s"  # per-sample scoring of the gradient-informed orders (inside probe_s)
CURVES = (TRAIN_LR, TRAIN_PHASE, TRAIN_LOSS, TRAIN_ACC, TRAIN_STEPS, TEST_LOSS, TEST_ACC, TEST_MIOU, TEST_MEAN_ACC)

# ---------------------------------------------------------------- parameter statistics [S, L]
PARAM_STEP = "params/step"
PARAM_EPOCH = "params/epoch"
PARAM_MEAN = "params/mean"
PARAM_VAR = "params/var"
PARAM_GRAD_NORM = "params/grad_norm"


def scalar(key: str) -> str:
    """The dataset of a per-epoch scalar given to ``Tracker.epoch_end(**scalars)``.

    ``lr`` and ``phase`` go to ``train/``; ``train_x`` -> ``train/x``, ``test_x`` -> ``test/x``,
    ``timing_x`` -> ``timing/x``; any other key -> ``user/<key>``.
    """
    if key in ("lr", "phase"):
        return f"train/{key}"
    for prefix in ("train", "test", "timing"):
        if key.startswith(prefix + "_") and len(key) > len(prefix) + 1:
            return f"{prefix}/{key[len(prefix) + 1:]}"
    return f"user/{key}"


# ---------------------------------------------------------------- one probe order
PER_EPOCH_ORDER = "per_epoch_order"  # probe-group attribute: index and batch_score are [E, N] and [E, K]
BATCHING = "batching"  # probe-group attribute: "contiguous", "stratified" or "class" (gradlab.registry.BATCHINGS)
BATCH_SIZES = "batch_sizes"  # probe-group attribute [K]: images per batch, where they differ (user batches)
# probe-group attributes: how the probe's input tensors were made (gradlab.data.inputs): "normalise" |
# "transform" | "as given" | "user batches"; the transform's repr; the normalisation (fraction of 255)
PREPROCESSING = "preprocessing"
TRANSFORM = "transform"
INPUT_MEAN = "input_mean"
INPUT_STD = "input_std"


def probe(name: str) -> str:
    return f"{PROBES}/{name}"


def probe_index(name: str) -> str:  # [N] image indices in probe order ([E, N] for per-epoch orders)
    return f"{probe(name)}/index"


def batch_score(name: str) -> str:  # [K] mean metric score of each batch ([E, K] for per-epoch orders)
    return f"{probe(name)}/batch_score"


def order_record(name: str, key: str) -> str:  # [E] how a per-epoch order was built (search_evals, ...)
    return f"{probe(name)}/{key}"


# the search order's per-epoch record (gradlab.track.search.SearchRecord), each /probes/<o>/<key> [E]
SEARCH_RECORD = ("search_evals", "search_seconds", "search_proposed", "search_accepted", "search_d_before",
                 "search_d_after", "search_d_own", "search_start")


def probe_batch(name: str) -> str:  # [K] dimension scale: batch number in probe order
    return f"{probe(name)}/batch"


def probe_image(name: str) -> str:  # [N] dimension scale: image position in probe order
    return f"{probe(name)}/image"


def sketch_bin(name: str) -> str:  # [d] dimension without values: CountSketch bins
    return f"{probe(name)}/sketch_bin"


def quantity(name: str, key: str) -> str:
    """Dataset ``key`` of probe ``name``: a tracked quantity (``gradlab.quantities``) is stored
    under its own name, directly in the probe's group (schema 2 keeps every per-probe array
    there, because netCDF readers such as xarray see only a group's own variables)."""
    return f"{probe(name)}/{key}"


DISTANCE_PREFIX = Q.Measure.name_of("")  # "distance_": a measure m's quantity is distance_<m>


def distance(name: str, measure: str) -> str:  # [E, K]
    return quantity(name, Q.Measure.name_of(measure))


def measure_of(key: str) -> str | None:
    """The measure of a probe-group member named by ``distance``, else None (``distance_l2`` -> ``l2``)."""
    return key[len(DISTANCE_PREFIX):] if key.startswith(DISTANCE_PREFIX) and len(key) > len(DISTANCE_PREFIX) else None


def layer_distance(name: str, measure: str = "l2") -> str:  # [E, K, L]
    return quantity(name, f"layer_{Q.Measure.name_of(measure)}")


def batch_norm(name: str) -> str:  # [E, K] |g_k|
    return quantity(name, Q.BatchNorm.name)


def batch_loss(name: str) -> str:  # [E, K] loss of batch k at theta_e
    return quantity(name, Q.BatchLoss.name)


def full_norm(name: str) -> str:  # [E] |G|
    return quantity(name, Q.FullNorm.name)


def noise_scale(name: str) -> str:  # [E] trace / g2, NaN where g2 <= 0
    return quantity(name, Q.NoiseScale.name)


def noise_g2(name: str) -> str:  # [E] unbiased estimate of |G_true|^2
    return quantity(name, Q.NoiseG2.name)


def noise_trace(name: str) -> str:  # [E] unbiased estimate of tr(Sigma)
    return quantity(name, Q.NoiseTrace.name)


def sketch(name: str) -> str:  # [E, K, d] CountSketch of each batch gradient (grads = "sketch")
    return f"{probe(name)}/sketch"


def grads(name: str, epoch: int | str) -> str:  # [K, P] raw batch gradients (keep_grads)
    return f"{probe(name)}/grads/epoch_{epoch}"

"""Data: datasets (built-in, user folders, import paths), batch orders, score cache.

``datasets``     ``ImageSet`` and ``load_split`` (cifar10, synthetic, imagefolder, ...)
``segmentation`` mask datasets and their evaluation
``orders``       fixed batch orders from a metric or random; ``batches(dataset, metric, ...)``
``scores``       the HDF5 score cache behind ``gradlab scores``
"""

# Every built-in name of ``data.dataset`` (import paths "package.module:load" besides). Kept here,
# free of torch, so that ``gradlab --help`` can list them without importing the loaders;
# ``gradlab.data.datasets`` checks that its loaders match this list.
DATASET_NAMES = ("synthetic", "cifar10", "cifar10-sample", "mnist", "animal-mnist", "buildings", "segfolder",
                 "imagefolder")

# Probe orders computed from per-sample gradients at each epoch's theta_e (``gradlab.track.gradorders``
# checks its registry against this list), and the two ways to cut any sorted order into batches.
GRADIENT_ORDER_NAMES = ("loss", "gradnorm", "align", "proj", "match")
NEEDS_FULL_GRADIENT = ("align", "proj", "match")  # those that need the random probe's full gradient
BATCHINGS = ("contiguous", "stratified")
STRATIFIED_SUFFIX = "@strat"  # probe name of an order's stratified cut: /probes/<order>@strat


def probe_name(order: str, batching: str = "contiguous") -> str:
    """The run file's probe name of ``order`` cut by ``batching`` (``align``, ``align@strat``)."""
    return order + STRATIFIED_SUFFIX if batching == "stratified" else order


def split_probe_name(name: str) -> tuple[str, str]:
    """``(order, batching)`` of a probe name: ``align@strat`` -> ``("align", "stratified")``."""
    if name.endswith(STRATIFIED_SUFFIX):
        return name[: -len(STRATIFIED_SUFFIX)], "stratified"
    return name, "contiguous"

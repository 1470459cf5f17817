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

"""Data: datasets (built-in, user folders, import paths), batch orders, score cache.

``datasets``     ``ImageSet`` and ``load_split`` (cifar10, synthetic, imagefolder, ...)
``segmentation`` mask datasets and their evaluation
``orders``       fixed batch orders from a metric or random; ``batches(dataset, metric, ...)``
``scores``       the HDF5 score cache behind ``gradlab scores``
"""

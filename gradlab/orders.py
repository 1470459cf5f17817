"""``gradlab.orders``: probe batches of any image dataset, for ``gradlab.Tracker(probes=...)``.

    probes = {"intensity": gradlab.orders.batches(data, "intensity", 256),
              "random": gradlab.orders.batches(data, "random", 256)}
    probes |= gradlab.orders.gradient_batches(data, ["align", "match"], 256)

This is the public entry above both the data layer (metric and random orders,
``gradlab.data.orders``) and the tracker (gradient-informed orders rebuilt at every theta_e,
``gradlab.track.gradorders``). An order is named as in a study file: gradlab's, an installed
plugin's, or an import path ``"package.module:Name"`` of your own ``Metric`` or ``GradientOrder``.

    >>> import torch, gradlab
    >>> images = torch.arange(8, dtype=torch.uint8).repeat_interleave(3 * 4 * 4).reshape(8, 3, 4, 4) * 30
    >>> data = [(img, i % 2) for i, img in enumerate(images)]  # a torchvision-style dataset
    >>> probe = gradlab.orders.batches(data, "intensity", batch_size=4)
    >>> probe.num_batches, probe.batch_score.tolist()  # dark batch first: mean intensity of each batch
    (2, [2160.0, 7920.0])
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from gradlab import registry
from gradlab.data.datasets import BatchLoader, ImageSet
from gradlab.data.inputs import ItemInputs
from gradlab.data.orders import Order, OrderBatches, ScoreFn, build_order, compute_scores, stratify
from gradlab.data.probes import ProbeBatches
from gradlab.errors import ConfigError

Transform = Callable[[Any], Any]  # one raw image -> the model's input tensor (a torchvision transform)

__all__ = ["batches", "gradient_batches", "Order", "OrderBatches", "ProbeBatches", "stratify"]


class _Images:
    """An ``ImageSet`` as a torchvision-style dataset: item i is ``(uint8 [3, H, W] image, label)``."""

    def __init__(self, data: ImageSet):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data.pixels("transform=")[i], int(self.data.labels[i])


def _imageset(dataset: Any, name: str | None, transform: Transform | None) -> ImageSet:
    """``dataset`` as an ``ImageSet`` whose model inputs are ``transform(image)`` when a transform is
    given (an ``ImageSet``'s image is its uint8 ``[3, H, W]`` tensor), else as ``to_imageset`` says."""
    if isinstance(dataset, ImageSet):
        if transform is None:
            return dataset
        return dataclasses.replace(dataset, inputs=ItemInputs(_Images(dataset), transform, dataset.name))
    from gradlab.data.userdata import to_imageset

    return to_imageset(dataset, name or type(dataset).__name__, transform=transform)


def _loader(data: ImageSet, batch_size: int, device: str | torch.device) -> BatchLoader:
    if len(data) < batch_size:
        raise ConfigError(f"the dataset has {len(data)} images, fewer than batch_size = {batch_size}")
    return BatchLoader(data, torch.device(device), batch_size)


def batches(dataset: Any, order: str = registry.RANDOM, batch_size: int = 256, *, batching: str = "contiguous",
            seed: int = 0, device: str | torch.device = "cpu", cache: str | Path | None = None,
            name: str | None = None, transform: Transform | None = None) -> ProbeBatches:
    """Probe batches of ``dataset`` for ``gradlab.Tracker(probes=...)``: sorted by a metric
    (``intensity``, ``hsv``, ``edges``, ``lpips``), shuffled (``random``), or a gradient-informed
    order rebuilt at every epoch's theta_e (``loss``, ``gradnorm``, ``align``, ``proj``,
    ``match``, ``search``; see ``gradient_batches`` to share one scoring pass between several),
    or a plugin's name or import path ``"package.module:Name"`` of your own ``Metric`` or
    ``GradientOrder``.

    ``batching``: ``contiguous`` (the paper's cut of the sorted order), ``stratified``
    (batch k takes sorted positions k, k + K, ...) or ``class`` (sorted within each class, every
    batch holds every class in proportion; ``random`` cut ``class`` is ``random@class``).
    ``dataset``: an ``ImageSet`` or a torchvision-style dataset of ``(image, label)``, all one
    size. ``cache``: an HDF5 score cache (as written by ``gradlab scores``) that keeps metric
    scores across runs, keyed by the images' fingerprint.

    The probe tensors (recorded in the probe's group as ``preprocessing``):

    - ``transform`` given (your own callable or torchvision transform): ``transform(image)`` of
      each raw image, exactly as your training loop makes it, batched like a ``DataLoader``;
      pass the raw dataset (no transform of its own) so that the metrics score raw pixels;
    - a dataset of float tensors (it has its own ``ToTensor()``/``Normalize()``): the tensors as
      given. Metric orders then need raw pixels: values exactly k/255 (``ToTensor()`` alone)
      are; normalised values are not, and a metric order is refused in one line;
    - PIL images or uint8 tensors without ``transform``: ``uint8 / 255`` normalised with the
      dataset's own per-channel mean/std, measured on its images.

    The metrics always score the raw pixels.
    """
    if registry.is_gradient_order(order):
        probes = gradient_batches(dataset, [order], batch_size, batchings=[batching], device=device, name=name,
                                  transform=transform)
        return probes[registry.probe_name(order, batching)]
    data = _imageset(dataset, name, transform)
    score_fn: ScoreFn = compute_scores
    if cache is not None:
        from gradlab.data.scores import cached_scores

        score_fn = cached_scores(cache)
    loader = _loader(data, batch_size, device)
    return OrderBatches(build_order(order, data, batch_size, seed, score_fn, batching), loader)


def gradient_batches(dataset: Any, orders: Sequence[str], batch_size: int = 256, *,
                     batchings: Sequence[str] = ("contiguous",), device: str | torch.device = "cpu",
                     max_bytes: int = 256 << 20, match_dim: int = 256, seed: int = 0,
                     name: str | None = None, transform: Transform | None = None,
                     per_sample: str = "fast", search_passes: int = 10) -> dict[str, ProbeBatches]:
    """Gradient-informed probes (``loss``, ``gradnorm``, ``align``, ``proj``, ``match``, ``search``) of
    ``dataset``, each cut every way in ``batchings`` it supports, keyed by probe name
    (``align``, ``align@strat``), all sharing one per-sample scoring pass per epoch
    (``gradlab.track.gradorders``). ``align``, ``proj`` and ``match`` need a ``random``
    probe beside them: its pass gives the full gradient. ``max_bytes`` bounds the per-sample
    work held at once; ``match_dim`` is the CountSketch width of ``match``. ``transform``:
    as in ``batches``; the per-sample scores and the batches both use the probe tensors.
    ``per_sample``: ``"fast"`` (per-layer factors, one forward and backward per chunk) or
    ``"vmap"`` (the reference, per-sample gradients by ``torch.func``). ``search_passes``: the
    cost bound of ``search`` (at most that many probe passes of batch gradients per epoch)."""
    from gradlab.track.gradorders import gradient_probes

    loader = _loader(_imageset(dataset, name, transform), batch_size, device)
    return dict(gradient_probes(loader, orders, batchings, max_bytes, match_dim, seed, per_sample, search_passes))

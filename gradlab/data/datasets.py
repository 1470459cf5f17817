"""Datasets as in-memory uint8 tensors, and fixed-order batch iteration.

Whole datasets are held as ``uint8 [N, 3, 32, 32]`` (CIFAR-10 train is 150 MB) so that a
batch is one index-gather, with no per-image Python work. Augmentation (random crop with
4-pixel zero padding, horizontal flip) is vectorised and draws from its own
``torch.Generator``: probe passes never touch it, so tracking cannot change training.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from gradlab.config import DataConfig
from gradlab import registry
from gradlab.data.images import MEAN, STD, ImageSet  # noqa: F401  (re-exported: the set every loader returns)
from gradlab.data.segmentation import is_segmentation, joint_flip
from gradlab.errors import DatasetError, did_you_mean

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SYNTHETIC_SIZES = {True: 50_000, False: 10_000}  # train, test: the sizes of CIFAR-10
EVAL_BATCH = 1000  # images per evaluation batch (no gradients: large is cheap)
SYNTHETIC_SEED = 20_240_601  # fixed: the synthetic set is the same data for every study


# --------------------------------------------------------------------------- sources

def load_cifar10(cfg: DataConfig, train: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10

    root = Path(cfg.root)
    folder = root / "cifar-10-batches-py"
    try:
        ds = CIFAR10(str(root), train=train, download=cfg.download and not folder.is_dir())
    except Exception as exc:  # offline download, truncated archive, permissions ...
        if folder.is_dir():  # torchvision's own text suggests download=True: not the fix here
            how = "is incomplete or damaged (torchvision's integrity check failed)"
        elif cfg.download:
            detail = str(exc).splitlines()[0] if str(exc) else "no detail"
            how = f"is missing and could not be downloaded ({type(exc).__name__}: {detail})"
        else:
            how = "is missing (data.download = false, so no download was tried)"
        raise DatasetError(
            f"CIFAR-10 in {folder} {how}. Put cifar-10-python.tar.gz from "
            f"https://www.cs.toronto.edu/~kriz/cifar-10.html into {root}/ and extract it there, "
            f"or set data.root to the folder that holds cifar-10-batches-py"
        ) from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ImageSet("cifar10", images, labels, CIFAR10_CLASSES)


def foolbox_cifar_dir() -> Path:
    """Folder of the 20 real CIFAR-10 test PNGs shipped in foolbox's wheel."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "dataset cifar10-sample needs the foolbox wheel's images: pip install --no-deps foolbox==3.3.4"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_cifar10_sample(cfg: DataConfig, train: bool) -> ImageSet:
    """The 20 CIFAR-10 test images from foolbox; train and test are the same 20 images."""
    from PIL import Image

    files = sorted(foolbox_cifar_dir().glob("cifar10_*.png"))
    if not files:
        raise DatasetError(f"no cifar10_*.png in {foolbox_cifar_dir()}: reinstall with "
                           f"pip install --no-deps foolbox==3.3.4")
    arrays, labels = [], []
    for f in files:  # names are cifar10_<index>_<label>.png
        arrays.append(np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1))
        labels.append(int(f.stem.split("_")[2]))
    return ImageSet("cifar10-sample", torch.from_numpy(np.stack(arrays)), torch.tensor(labels), CIFAR10_CLASSES)


def synthetic_images(n: int, seed: int, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic, learnable 10-class 32x32 RGB images.

    The class sets the orientation of a sinusoidal grating inside a soft blob (class c at
    c x 18 degrees, jittered by 4). Everything else is drawn per image and independent of
    the class: blob position and size, grating frequency and phase, foreground and
    background colour, brightness and pixel noise. So intensity, colour and edge density
    vary as in natural images, but only orientation predicts the label. Images are made in
    chunks seeded by (seed, chunk number), so the first n images never depend on n.
    """
    images, labels = [], []
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    for start in range(0, n, chunk):
        b = chunk  # always draw a whole chunk, then cut: the draws never depend on n
        g = torch.Generator().manual_seed(seed * 1_000_003 + start // chunk)
        u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
        label = torch.randint(0, 10, (b,), generator=g)
        theta = label * (math.pi / 10) + torch.randn(b, generator=g) * math.radians(4)
        freq = (2.0 + 2.5 * u(b)) / 32.0  # cycles per pixel
        phase = 2 * math.pi * u(b)
        proj = xx * torch.cos(theta)[:, None, None] + yy * torch.sin(theta)[:, None, None]
        grating = torch.sin(2 * math.pi * freq[:, None, None] * proj + phase[:, None, None])
        cy, cx = 8 + 16 * u(b), 8 + 16 * u(b)
        radius = 7 + 7 * u(b)
        dist2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
        mask = torch.sigmoid((radius[:, None, None] ** 2 - dist2) / (2 * radius[:, None, None]))
        brightness = 0.25 + 0.75 * u(b, 1, 1, 1)
        fg = u(b, 3, 1, 1) * brightness
        bg = u(b, 3, 1, 1) * brightness * 0.8
        contrast = 0.5 + 0.5 * u(b, 1, 1, 1)
        texture = 0.5 + 0.5 * contrast * grating[:, None]
        img = bg * (1 - mask[:, None]) + fg * texture * mask[:, None]
        img = img + 0.03 * torch.randn(b, 3, 32, 32, generator=g)
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        labels.append(label)
    return torch.cat(images)[:n], torch.cat(labels)[:n]


def load_synthetic(cfg: DataConfig, train: bool) -> ImageSet:
    limit = cfg.subset if train else cfg.test_subset
    n = SYNTHETIC_SIZES[train] if limit <= 0 else min(limit, SYNTHETIC_SIZES[train])
    images, labels = synthetic_images(n, SYNTHETIC_SEED + (0 if train else 1))
    return ImageSet("synthetic", images, labels, tuple(f"orient{18 * i:03d}deg" for i in range(10)))


def load_split(cfg: DataConfig, train: bool) -> ImageSet:
    """Load the train or test split named by ``cfg.dataset`` (a built-in name, ``imagefolder``
    or an import path ``"pkg.mod:load"``), cut to ``subset``/``test_subset``."""
    from gradlab.data import userdata
    from gradlab.usercode import is_import_path

    if is_import_path(cfg.dataset):
        data = userdata.from_import_path(cfg, train)
    elif cfg.dataset in registry.DATASETS:
        data = registry.DATASETS.load(cfg.dataset)(cfg, train)
    else:
        raise DatasetError(f'unknown dataset "{cfg.dataset}"{did_you_mean(cfg.dataset, registry.DATASETS)}; '
                           f'choose one of {", ".join(registry.DATASETS)}, or an import path "package.module:load"')
    return data.head(cfg.subset if train else cfg.test_subset)


# --------------------------------------------------------------------------- batching

def num_batches(n: int, batch_size: int) -> int:
    """Batches per pass with drop_last, as in the paper (50,000 / 256 -> 195)."""
    return n // batch_size


class BatchLoader:
    """Fixed-order batches of one ``ImageSet`` on one device.

    ``batches(order)`` yields ``(x, y)`` with ``x`` normalised float32; with ``augment``
    set to a generator, each batch is randomly cropped and flipped from that generator.
    """

    def __init__(self, data: ImageSet, device: torch.device, batch_size: int):
        self.data = data
        self.batch_size = batch_size
        self.device = device
        self.inputs = data.inputs  # the user's preprocessing, per image; None: normalise the images
        self.images = data.images.to(device) if self.inputs is None else None
        self.labels = data.labels.to(device)
        self.segmentation = is_segmentation(data)
        self.mean = torch.tensor(data.mean, device=device).view(1, 3, 1, 1)  # the data's own normalisation
        self.std = torch.tensor(data.std, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return num_batches(len(self.data), self.batch_size)

    def batch_indices(self, order: torch.Tensor) -> list[torch.Tensor]:
        """Index tensors of the full batches of ``order`` (remainder dropped)."""
        k = num_batches(len(order), self.batch_size)
        return list(order[: k * self.batch_size].view(k, self.batch_size))

    def batches(self, order: torch.Tensor, augment: torch.Generator | None = None,
                shard: tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``shard = (rank, world)``: yield only this rank's contiguous slice of each batch, with
        the augmentation randoms of the whole batch drawn (so every rank's stream is the same)."""
        for idx in self.batch_indices(order):
            if shard is None:
                yield self.get(idx, augment)
            else:
                part = len(idx) // shard[1]
                lo = shard[0] * part
                yield self.get(idx[lo:lo + part], augment, part=(lo, len(idx)))

    def get(self, idx: torch.Tensor, augment: torch.Generator | None = None,
            part: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``idx``; ``part = (start, total)``: ``idx`` is rows start.. of a batch of ``total``."""
        if self.inputs is not None:  # the user's own tensors: augmentation (crop, flip) comes after them
            x = self.inputs(idx.tolist()).to(self.device)
            x = random_crop_flip(x, augment, part=part) if augment is not None else x
            return x, self.labels[idx.to(self.device)]
        idx = idx.to(self.device)
        x = self.images[idx].float().div_(255)
        if self.segmentation:  # masks: augment image and mask together
            y = self.labels[idx].long()
            if augment is not None:
                x, y = joint_flip(x, y, augment, part=part)
            return (x - self.mean) / self.std, y
        if augment is not None:
            x = random_crop_flip(x, augment, part=part)
        return (x - self.mean) / self.std, self.labels[idx]

    def all_batches(self, batch_size: int = EVAL_BATCH, owned: range | None = None
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in storage order, last batch partial: for evaluation. ``owned``:
        only these batch numbers (a torchrun rank's share, ``Dist.owned``)."""
        starts = range(0, len(self.data), batch_size)
        for k in owned if owned is not None else range(len(starts)):
            s = starts[k]
            yield self.get(torch.arange(s, min(s + batch_size, len(self.data))))


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4,
                     part: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-image random crop of a zero-padded batch and random horizontal flip.

    ``part = (start, total)``: ``x`` is rows ``start:start + len(x)`` of a batch of ``total``
    images; the randoms of the whole batch are drawn and this part's used, so the result
    equals those rows of the whole batch's augmentation (DDP ranks share a global batch).
    """
    b, _, h, w = x.shape
    start, total = part or (0, b)
    rows_of = slice(start, start + b)
    oy = torch.randint(0, 2 * pad + 1, (total,), generator=gen)[rows_of].to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (total,), generator=gen)[rows_of].to(x.device)
    flip = (torch.rand(total, generator=gen) < 0.5)[rows_of].to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + ox[:, None]  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp[bi, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()

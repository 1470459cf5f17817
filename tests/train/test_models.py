from __future__ import annotations

import pytest
import torch

from gradlab.config import ModelConfig
from gradlab.track.layout import ParamLayout
from gradlab.models import build_model, count_params
from gradlab.errors import ConfigError


def test_dpn92_parameter_count_matches_kuangliu():
    assert count_params(build_model(ModelConfig(name="dpn92"))) == 34_236_634


@pytest.mark.parametrize("name", ["smallcnn", "resnet18", "dpn26"])
def test_forward_shapes(name):
    torch.manual_seed(0)
    m = build_model(ModelConfig(name=name))
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_layout_flatten_roundtrip_and_kinds():
    m = build_model(ModelConfig(name="smallcnn", norm="bn"))
    lay = ParamLayout.of(m)
    flat = lay.flatten([p for p in m.parameters()])
    assert flat.numel() == lay.size == count_params(m)
    back = lay.unflatten(flat)
    for n, p in m.named_parameters():
        assert torch.equal(back[n], p)
    assert set(lay.kinds) == {"conv.weight", "bn.weight", "bn.bias", "linear.weight", "bias"}


def test_unknown_model_suggests():
    with pytest.raises(ConfigError, match='did you mean "dpn92"'):
        build_model(ModelConfig(name="dpn93"))

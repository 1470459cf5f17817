from __future__ import annotations

import pytest
import torch

from gradlab.config import ModelConfig
from gradlab.errors import ConfigError
from gradlab.models import build_model
from gradlab.models.dpn import Bottleneck


def _original_merge(self, x, out):  # the foundation's merge, before the weight mechanism
    d = self.out_planes
    return torch.cat([x[:, :d] + out[:, :d], x[:, d:], out[:, d:]], 1)


def _build(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(**kw)).eval()


@pytest.mark.parametrize("norm", ["bn", "agc"])
def test_dpn_alpha_beta_one_is_bit_identical_to_baseline(monkeypatch, norm):
    x = torch.randn(2, 3, 32, 32)
    ours = _build(name="dpn26", norm=norm, series_weight=1.0, parallel_weight=1.0)
    y = ours(x)
    monkeypatch.setattr(Bottleneck, "merge", _original_merge)
    base = _build(name="dpn26", norm=norm)
    for (n1, p1), (n2, p2) in zip(ours.state_dict().items(), base.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(y, base(x))


def test_dpn_merge_places_alpha_on_carried_and_beta_on_new_dense_features():
    b = Bottleneck(16, 32, 8, 4, 1, True, "bn", series_weight=0.1, parallel_weight=0.5)
    x, out = torch.randn(2, 12, 4, 4), torch.randn(2, 12, 4, 4)
    got = b.merge(x, out)
    want = torch.cat([x[:, :8] + out[:, :8], 0.1 * x[:, 8:], 0.5 * out[:, 8:]], 1)
    assert torch.equal(got, want)


def _dec_inputs(model, x):
    seen = []
    hooks = [d.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone())) for d in model.dec]
    model(x)
    for h in hooks:
        h.remove()
    return seen  # deepest join first


def test_resunet_alpha_scales_skip_and_beta_scales_upsampled_input():
    x = torch.randn(2, 3, 32, 32)
    base = _build(name="resunet", num_classes=2, width=4)
    alpha = _build(name="resunet", num_classes=2, width=4, series_weight=0.1)
    beta = _build(name="resunet", num_classes=2, width=4, parallel_weight=0.1)
    b, a, p = _dec_inputs(base, x), _dec_inputs(alpha, x), _dec_inputs(beta, x)
    assert len(b) == 4
    c_skip = base.dec[3].conv1.in_channels - base.dec[3].conv1.in_channels * 2 // 3  # skip has 8w, up 16w
    # deepest join: encoder features are the same in all three models, so the scaling is exact
    torch.testing.assert_close(a[0][:, :c_skip], 0.1 * b[0][:, :c_skip])
    assert torch.equal(a[0][:, c_skip:], b[0][:, c_skip:])
    assert torch.equal(p[0][:, :c_skip], b[0][:, :c_skip])
    torch.testing.assert_close(p[0][:, c_skip:], 0.1 * b[0][:, c_skip:])


def test_resunet_alpha_beta_one_is_bit_identical_and_shapes():
    x = torch.randn(2, 3, 32, 32)
    ours = _build(name="resunet", num_classes=2, width=4, series_weight=1.0, parallel_weight=1.0)
    y = ours(x)
    ref = _build(name="resunet", num_classes=2, width=4)
    # reference forward with a plain concatenation
    ref.concat = lambda skip, up: torch.cat([skip, up], 1)
    assert torch.equal(y, ref(x)) and y.shape == (2, 2, 32, 32)
    with pytest.raises(ValueError, match="divisible by 16"):
        ours(torch.randn(1, 3, 40, 40))


def test_weights_rejected_for_models_without_concatenation():
    with pytest.raises(ConfigError, match="concatenations"):
        build_model(ModelConfig(name="resnet18", series_weight=0.5))

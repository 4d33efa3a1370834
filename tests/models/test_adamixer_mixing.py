"""AdaptiveMixing (ACM/ASM) against a float64 einsum reference, and the mixer extension point."""
import math

import pytest
import torch
from mmengine.model import BaseModule
from torch import nn

import lors_det  # noqa: F401
from lors_det.models.layers import (AdaptiveMixing, AdaptiveSamplingMixing, xyzr_to_wh)
from mmdet.registry import MODELS
from _adamixer_helpers import mmdet_default_scope  # noqa: F401  (autouse fixture)


def _layer_norm_2d(t, eps=1e-5):
    mean = t.mean(dim=(-2, -1), keepdim=True)
    var = ((t - mean) ** 2).mean(dim=(-2, -1), keepdim=True)
    return (t - mean) / torch.sqrt(var + eps)


def _mixing_reference(mixer, sampled, query):
    """Explicit per-group layout of the generated vector, then einsum ACM/ASM in float64."""
    G, Pin, Pout = mixer.n_groups, mixer.in_points, mixer.out_points
    Cin, Cout = mixer.in_dim // G, mixer.out_dim // G
    W = mixer.parameter_generator[0].weight
    b = mixer.parameter_generator[0].bias
    params = torch.einsum('bnq,kq->bnk', query, W) + b
    per_group = Cin * Cout + Pout * Pin
    outs = []
    for g in range(G):
        block = params[..., g * per_group:(g + 1) * per_group]
        M = block[..., :Cin * Cout].reshape(*block.shape[:2], Cin, Cout)
        S = block[..., Cin * Cout:].reshape(*block.shape[:2], Pout, Pin)
        x = sampled[:, :, g]                                   # group g only: [B, N, Pin, Cin]
        h = torch.relu(_layer_norm_2d(torch.einsum('bnpc,bncd->bnpd', x, M)))
        h = torch.relu(_layer_norm_2d(torch.einsum('bnop,bnpd->bnod', S, h)))
        outs.append(h.flatten(2))                              # (point, channel) order
    flat = torch.cat(outs, dim=-1)                             # groups outermost
    return torch.einsum('bnk,qk->bnq', flat, mixer.out_proj.weight) + mixer.out_proj.bias


@pytest.mark.parametrize('groups,in_points,out_points,in_dim,out_dim',
                         [(4, 6, 5, 16, 16), (2, 9, 4, 12, 8)])
def test_adaptive_mixing_matches_einsum_reference(groups, in_points, out_points, in_dim, out_dim):
    torch.manual_seed(0)
    query_dim = 10
    mixer = AdaptiveMixing(in_dim=in_dim, in_points=in_points, out_points=out_points,
                           n_groups=groups, query_dim=query_dim, out_dim=out_dim).double()
    nn.init.normal_(mixer.parameter_generator[0].weight, std=0.3)  # generic, query-dependent
    sampled = torch.randn(2, 3, groups, in_points, in_dim // groups, dtype=torch.float64)
    query = torch.randn(2, 3, query_dim, dtype=torch.float64)
    out = mixer(sampled, query)
    assert out.shape == (2, 3, query_dim)
    torch.testing.assert_close(out, _mixing_reference(mixer, sampled, query),
                               rtol=1e-10, atol=1e-10)


def test_groups_only_see_their_own_slice():
    torch.manual_seed(0)
    mixer = AdaptiveMixing(in_dim=16, in_points=3, out_points=4, n_groups=4,
                           query_dim=8).double()
    nn.init.normal_(mixer.parameter_generator[0].weight, std=0.3)
    captured = []
    mixer.out_proj.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    sampled = torch.randn(1, 2, 4, 3, 4, dtype=torch.float64)
    query = torch.randn(1, 2, 8, dtype=torch.float64)
    mixer(sampled, query)
    changed = sampled.clone()
    changed[:, :, 2] += torch.randn_like(changed[:, :, 2])  # perturb group 2 only
    mixer(changed, query)
    before, after = (c.view(1, 2, 4, 4, 4) for c in captured)  # [B, N, G, P_out, C]
    diff = (before - after).abs().amax(dim=(0, 1, 3, 4))
    assert diff[2] > 1e-3
    assert torch.equal(diff[[0, 1, 3]], torch.zeros(3, dtype=torch.float64))


def test_mixer_rejects_wrong_layout():
    mixer = AdaptiveMixing(in_dim=16, in_points=3, out_points=4, n_groups=4, query_dim=8)
    with pytest.raises(ValueError, match='AdaptiveMixing expects'):
        mixer(torch.zeros(1, 2, 2, 3, 8), torch.zeros(1, 2, 8))
    with pytest.raises(ValueError, match='divisible by n_groups'):
        AdaptiveMixing(in_dim=10, in_points=3, out_points=4, n_groups=4, query_dim=8)


@MODELS.register_module(force=True)
class _RecordingMixer(BaseModule):
    """Test mixer: records what the sampling module hands over and returns zeros."""

    def __init__(self, in_dim, in_points, out_points, n_groups, query_dim, out_dim, tag=None):
        super().__init__()
        self.kwargs = dict(in_dim=in_dim, in_points=in_points, out_points=out_points,
                           n_groups=n_groups, query_dim=query_dim, out_dim=out_dim, tag=tag)
        self.scale = nn.Parameter(torch.ones(()))
        self.init_calls = 0
        self.recorded = None

    def init_weights(self):
        self.init_calls += 1

    def forward(self, sampled, query):
        self.recorded = sampled
        return torch.zeros_like(query) * self.scale


def test_sampling_mixing_builds_mixer_from_config():
    module = AdaptiveSamplingMixing(content_dim=12, feat_channels=8, in_points=3, out_points=5,
                                    n_groups=2, mixing_cfg=dict(type='_RecordingMixer', tag='x'))
    assert module.adaptive_mixing.kwargs == dict(in_dim=8, in_points=3, out_points=5, n_groups=2,
                                                 query_dim=12, out_dim=8, tag='x')
    assert module.adaptive_mixing.init_calls >= 1
    with pytest.raises(ValueError, match='mixing_cfg.n_groups'):
        AdaptiveSamplingMixing(content_dim=12, feat_channels=8, in_points=3, out_points=5,
                               n_groups=2, mixing_cfg=dict(type='_RecordingMixer', n_groups=4))


def test_sampling_offsets_are_group_major_x_then_y():
    """Known offset biases -> the mixer receives features sampled at hand-computed points."""
    strides = (4, 8)
    groups, points, ch = 2, 3, 2
    module = AdaptiveSamplingMixing(content_dim=8, feat_channels=groups * ch, in_points=points,
                                    out_points=4, n_groups=groups,
                                    mixing_cfg=dict(type='_RecordingMixer')).double()
    offsets = torch.tensor([[[0.1, -0.2, -1.0], [0.3, 0.0, 0.0], [-0.4, 0.25, 0.5]],
                            [[0.0, 0.4, -0.5], [-0.1, -0.3, 1.0], [0.2, 0.2, 0.0]]],
                           dtype=torch.float64)
    with torch.no_grad():
        module.sampling_offset_generator[0].bias.copy_(offsets.flatten())
    # channel value = x index for even channels, y index for odd ones (pixel units)
    feats = []
    for s in strides:
        h, w = 64 // s, 64 // s
        jj = torch.arange(w, dtype=torch.float64).view(1, 1, w).expand(1, h, w)
        ii = torch.arange(h, dtype=torch.float64).view(1, h, 1).expand(1, h, w)
        feats.append(torch.cat([jj, ii] * groups).unsqueeze(0))
    xyzr = torch.tensor([[[32., 30., math.log2(16.), 0.5]]], dtype=torch.float64)
    query = torch.randn(1, 1, 8, dtype=torch.float64)
    out = module(feats, query, xyzr, strides)
    # zero mixer output: the result is just norm(query)
    torch.testing.assert_close(out, module.norm(query))

    w, h = xyzr_to_wh(xyzr)[0, 0].tolist()
    for g in range(groups):
        for p in range(points):
            ox, oy, oz = offsets[g, p].tolist()
            x, y, z = 32. + ox * w, 30. + oy * h, math.log2(16.) + oz
            logits = [-(z - math.log2(s)) ** 2 / 2 for s in strides]
            lw = [math.exp(v) / sum(math.exp(u) for u in logits) for v in logits]
            exp_x = sum(lw[l] * (x / s - 0.5) for l, s in enumerate(strides))
            exp_y = sum(lw[l] * (y / s - 0.5) for l, s in enumerate(strides))
            got = module.adaptive_mixing.recorded[0, 0, g, p]
            torch.testing.assert_close(got, torch.tensor([exp_x, exp_y], dtype=torch.float64))


def test_sampling_mixing_init_random_and_grid():
    torch.manual_seed(0)
    # P_in = 32 (not a square): uniform xy in [-0.5, 0.5], z = -1, weights 0
    module = AdaptiveSamplingMixing(content_dim=32, feat_channels=32, in_points=32,
                                    out_points=8, n_groups=4)
    gen = module.sampling_offset_generator[0]
    assert torch.equal(gen.weight, torch.zeros_like(gen.weight))
    bias = gen.bias.view(4, 32, 3)
    assert torch.all(bias[..., 2] == -1.0)
    assert bias[..., :2].abs().max() <= 0.5 and bias[..., :2].std() > 0.2
    pg = module.adaptive_mixing.parameter_generator[0].weight
    assert torch.equal(pg, torch.zeros_like(pg))
    # G = 2 / P_in = 64 (the LORS setting) is a config change; 64 points form an 8x8 grid
    module = AdaptiveSamplingMixing(content_dim=256, feat_channels=256, in_points=64,
                                    out_points=128, n_groups=2)
    assert module.adaptive_mixing.parameter_generator[0].out_features == 2 * (128 * 128 + 64 * 128)
    assert module.adaptive_mixing.out_proj.in_features == 2 * 128 * 128
    bias = module.sampling_offset_generator[0].bias.view(2, 64, 3)
    ticks = (torch.arange(8) + 0.5) / 8 - 0.5
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing='xy'), dim=-1).reshape(64, 2)
    torch.testing.assert_close(bias[0, :, :2], grid)
    torch.testing.assert_close(bias[1, :, :2], grid)
    assert torch.all(bias[..., 2] == -1.0)


def test_sampling_offset_init_can_be_chosen():
    """'uniform' for a square P_in, 'grid' only for a square P_in, 'auto' as before."""
    torch.manual_seed(0)
    square = AdaptiveSamplingMixing(content_dim=32, feat_channels=32, in_points=16,
                                    out_points=8, n_groups=4, offset_init='uniform')
    bias = square.sampling_offset_generator[0].bias.view(4, 16, 3)
    ticks = (torch.arange(4) + 0.5) / 4 - 0.5
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing='xy'), dim=-1).reshape(16, 2)
    assert not torch.allclose(bias[0, :, :2], grid)  # not the grid ...
    assert bias[..., :2].abs().max() <= 0.5 and torch.all(bias[..., 2] == -1.0)  # ... uniform
    auto = AdaptiveSamplingMixing(content_dim=32, feat_channels=32, in_points=16,
                                  out_points=8, n_groups=4)
    torch.testing.assert_close(auto.sampling_offset_generator[0].bias.view(4, 16, 3)[0, :, :2],
                               grid)
    with pytest.raises(ValueError, match='grid needs a square in_points, got 32'):
        AdaptiveSamplingMixing(content_dim=32, feat_channels=32, in_points=32, out_points=8,
                               n_groups=4, offset_init='grid')

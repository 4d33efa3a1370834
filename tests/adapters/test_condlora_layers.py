"""CondLoRA layer wrappers and grouping against float64 references of ΔW = (α/r) W θ_B θ_Aᵀ W."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lors_det  # noqa: F401  (registers CondLoRA)
from lors_det.models.adapters import (CondLoRAConv2d, CondLoRALinear, apply_adapter,
                                      count_trainable_parameters, depth_free_role,
                                      merge_adapters, unmerge_adapters)


class Block(nn.Module):

    def __init__(self, dim=8, hidden=16):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, hidden)  # rectangular: d_out != d_in
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.v(x) * torch.sigmoid(self.q(x))
        return x + self.fc2(F.gelu(self.fc1(x)))


class Stack(nn.Module):

    def __init__(self, depth, dim=8, hidden=16):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, hidden) for _ in range(depth))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


TARGETS = [r'blocks\.\d+\.(q|v|fc1|fc2)']


def _inject(model, **kwargs):
    return apply_adapter(model, dict(type='CondLoRA', **kwargs), owner=model)


def _randomize_thetas(adapter, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)


def _reference_delta(weight, theta_a, theta_b, scaling):
    """(α/r) · (M θ_B)(θ_Aᵀ M) with M the (d_out, d_in·k·k) matrix of W, in float64."""
    matrix = weight.detach().double().reshape(weight.shape[0], -1)
    cond_b = matrix @ theta_b.detach().double()  # B = Linear(W0; θ_B): (d_out, r)
    cond_a = (matrix.T @ theta_a.detach().double()).T  # A = Linear(W0ᵀ; θ_A)ᵀ: (r, d_in)
    return (scaling * cond_b @ cond_a).reshape(weight.shape)


def test_theta_shapes_and_init():
    torch.manual_seed(0)
    model = Stack(depth=3)
    adapter = _inject(model, targets=TARGETS, rank=4)
    for name in ('q', 'fc1', 'fc2'):
        layer = getattr(model.blocks[1], name)
        assert isinstance(layer, CondLoRALinear)
        theta_a, theta_b = layer._thetas()
        assert theta_a.shape == (layer.out_features, 4)
        assert theta_b.shape == (layer.in_features, 4)
        # kaiming_uniform(a=√5) on the (r x d_out) view: U(±1/√d_out); θ_B = 0 so ΔW = 0
        bound = 1 / math.sqrt(layer.out_features)
        assert theta_a.abs().max() <= bound and theta_a.abs().max() > 0.5 * bound
        assert torch.count_nonzero(theta_b) == 0
        assert torch.count_nonzero(layer.get_delta_weight()) == 0
    assert list(model.blocks[0].q.children()) == []


@pytest.mark.parametrize('linear_forward', ['factorised', 'merged'])
def test_rectangular_linear_matches_float64_reference(linear_forward):
    torch.manual_seed(1)
    model = Stack(depth=2).double()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapter = _inject(model, targets=TARGETS, rank=3, alpha=6, linear_forward=linear_forward)
    model.double()
    _randomize_thetas(adapter)
    x = torch.randn(5, 8, dtype=torch.float64)
    for name in ('q', 'fc1', 'fc2'):
        layer = getattr(model.blocks[1], name)
        weight0 = base[f'blocks.1.{name}.weight']
        theta_a, theta_b = layer._thetas()
        delta = _reference_delta(weight0, theta_a, theta_b, scaling=6 / 3)
        assert delta.abs().max() > 0
        inp = torch.randn(5, layer.in_features, dtype=torch.float64)
        ref = inp @ (weight0 + delta).T + base[f'blocks.1.{name}.bias']
        torch.testing.assert_close(layer(inp), ref, rtol=1e-12, atol=1e-12)
    # the whole stack: same reference applied block by block
    ref = x
    for i in range(2):
        lin = {}
        for name in ('q', 'v', 'fc1', 'fc2'):
            layer = getattr(model.blocks[i], name)
            w0 = base[f'blocks.{i}.{name}.weight']
            ta, tb = layer._thetas()
            lin[name] = (w0 + _reference_delta(w0, ta, tb, 2.0), base[f'blocks.{i}.{name}.bias'])
        f = {k: (lambda t, w=w, b=b: t @ w.T + b) for k, (w, b) in lin.items()}
        ref = ref + f['v'](ref) * torch.sigmoid(f['q'](ref))
        ref = ref + f['fc2'](F.gelu(f['fc1'](ref)))
    torch.testing.assert_close(model(x), ref, rtol=1e-12, atol=1e-12)


CONV_CASES = [  # (in, out, kernel, stride, padding, dilation, groups)
    (6, 10, 1, 1, 0, 1, 1),
    (6, 10, 3, 2, 1, 1, 1),
    (6, 10, 3, 1, 2, 2, 1),
    (3, 8, 7, 2, 3, 1, 1),
    (8, 12, 3, 1, 1, 1, 4),
]


@pytest.mark.parametrize('case,conv_forward', [(c, 'merged') for c in CONV_CASES] +
                         [(c, 'factorised') for c in CONV_CASES if c[6] == 1])
def test_conv_matches_merged_weight_reference(case, conv_forward):
    cin, cout, k, stride, pad, dil, groups = case
    torch.manual_seed(2)
    holder = nn.Module()
    holder.conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups).double()
    weight0, bias0 = holder.conv.weight.detach().clone(), holder.conv.bias.detach().clone()
    adapter = _inject(holder, targets=['conv'], rank=3, conv_forward=conv_forward)
    holder.double()
    _randomize_thetas(adapter, seed=5)
    layer = holder.conv
    assert isinstance(layer, CondLoRAConv2d)
    theta_a, theta_b = layer._thetas()
    assert theta_b.shape == (cin // groups * k * k, 3)
    delta = _reference_delta(weight0, theta_a, theta_b, scaling=1.0)
    x = torch.randn(2, cin, 12, 10, dtype=torch.float64)
    ref = F.conv2d(x, weight0 + delta, bias0, stride, pad, dil, groups)
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)


def test_groups_share_theta_across_depth_and_count_is_depth_independent():
    counts = {}
    for depth in (2, 12):
        model = Stack(depth=depth)
        adapter = _inject(model, targets=TARGETS, rank=4)
        # one θ pair per role: q, v (8x8), fc1 (16x8), fc2 (8x16)
        assert len(adapter.groups) == 4
        assert all(len(members) == depth for members in adapter.groups.values())
        first, last = model.blocks[0].fc1, model.blocks[depth - 1].fc1
        assert first._thetas()[0] is last._thetas()[0]
        assert model.blocks[0].q._thetas()[0] is not model.blocks[0].v._thetas()[0]
        counts[depth] = count_trainable_parameters(model)
    # r (d_out + d_in) per group
    assert counts[2] == counts[12] == 4 * ((8 + 8) + (8 + 8) + (16 + 8) + (8 + 16))


def test_roberta_base_qv_count_matches_paper():
    model = nn.Module()
    model.layer = nn.ModuleList(
        nn.ModuleDict(dict(query=nn.Linear(768, 768), value=nn.Linear(768, 768)))
        for _ in range(12))
    adapter = _inject(model, targets=[r'layer\.\d+\.(query|value)'], rank=8)
    assert len(adapter.groups) == 2
    # CondLoRA Table 4 (RoBERTa-base, q and v, r = 8): 2 x (768·8 + 768·8)
    assert count_trainable_parameters(model) == 2 * (768 * 8 + 768 * 8) == 24_576


def test_group_by_shape_and_regex():
    model = Stack(depth=3)
    adapter = _inject(model, targets=TARGETS, rank=2, group_by='shape')
    assert len(adapter.groups) == 3  # q and v share the 8x8 shape
    model = Stack(depth=4)
    # capture groups replace the role: here the block index, so θ is per block and shape
    adapter = _inject(model, targets=TARGETS, rank=2, group_by=r'blocks\.(\d+)\.')
    assert len(adapter.groups) == 4 * 3
    with pytest.raises(ValueError, match='group_by'):
        _inject(Stack(depth=1), targets=TARGETS, group_by='no_capture')


def test_depth_free_roles():
    from mmdet.models.backbones import ResNet, SwinTransformer
    resnet = ResNet(depth=18)
    assert depth_free_role(resnet, 'layer3.1.conv2') == 'layer3.conv2'
    assert depth_free_role(resnet, 'layer3.0.downsample.0') == 'layer3.downsample.0'
    assert depth_free_role(resnet, 'conv1') == 'conv1'
    swin = SwinTransformer(embed_dims=16, depths=(2, 2), num_heads=(1, 2), out_indices=(0, 1))
    assert depth_free_role(swin, 'stages.1.blocks.1.attn.w_msa.qkv') == \
        'stages.1.blocks.attn.w_msa.qkv'
    assert depth_free_role(swin, 'stages.0.blocks.0.ffn.layers.0.0') == \
        'stages.0.blocks.ffn.layers.0.0'


def test_merge_then_unmerge_is_exact_and_needs_the_cache():
    torch.manual_seed(3)
    model = Stack(depth=2)
    adapter = _inject(model, targets=TARGETS, rank=4)
    _randomize_thetas(adapter)
    x = torch.randn(6, 8)
    before = model(x)
    weights0 = {n: p.detach().clone() for n, p in model.named_parameters() if 'weight' in n}
    merge_adapters(model)
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)
    layer = model.blocks[0].fc1
    # recomputing ΔW from the merged weight (the official code's unmerge) is not an inverse
    naive = layer.weight.detach() - layer.get_delta_weight().detach()
    assert (naive - weights0['blocks.0.fc1.weight']).abs().max() > 1e-4
    unmerge_adapters(model)
    for name, param in model.named_parameters():
        if name in weights0:
            assert torch.equal(param, weights0[name]), name
    assert torch.equal(model(x), before)


def test_gradients_reach_only_theta():
    torch.manual_seed(4)
    model = Stack(depth=2).double()
    adapter = _inject(model, targets=TARGETS, rank=2)
    model.double()
    x = torch.randn(3, 8, dtype=torch.float64)
    model(x).square().sum().backward()
    for name, param in model.named_parameters():
        if 'condlora_theta' in name:
            assert param.requires_grad and param.grad is not None
        else:
            assert param.grad is None, name
    # θ_B = 0 at init: θ_A's gradient vanishes, θ_B's does not
    group = model.blocks[0].fc1.group
    assert torch.count_nonzero(adapter.condlora_theta_A[group].grad) == 0
    assert adapter.condlora_theta_B[group].grad.abs().sum() > 0

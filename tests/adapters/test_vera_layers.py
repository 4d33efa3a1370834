"""VeRA layer wrappers against float64 references written from the paper's formula."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lors_det  # noqa: F401  (registers VeRA)
from lors_det.models.adapters import (VeRA, VeRAConv2d, VeRALinear, apply_adapter,
                                      count_trainable_parameters, merge_adapters,
                                      unmerge_adapters, vera_projections)


class TwoLinear(nn.Module):
    """Two Linear layers of different shapes: the shared A/B must be sliced per layer."""

    def __init__(self):
        super().__init__()
        self.small = nn.Linear(20, 12)
        self.tall = nn.Linear(7, 30)

    def forward(self, x):
        return self.small(x), self.tall(x[..., :7])


class ConvHolder(nn.Module):

    def __init__(self, conv, other=None):
        super().__init__()
        self.conv = conv
        self.other = other if other is not None else nn.Conv2d(3, 5, 1)


def _inject(model, **kwargs):
    adapter = apply_adapter(model, dict(type='VeRA', **kwargs), owner=model)
    return adapter


def _randomize_lambdas(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'vera_lambda' in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _reference_delta(layer, proj_a, proj_b):
    """Λ_b B[:d_out] Λ_d A[:, :d_in] in float64, reshaped to the weight's shape."""
    d_out = layer.weight.shape[0]
    d_in = layer.weight[0].numel()
    lam_b = layer.vera_lambda_b.detach().double()
    lam_d = layer.vera_lambda_d.detach().double()
    delta = torch.diag(lam_b) @ proj_b[:d_out].double() @ torch.diag(lam_d) @ \
        proj_a[:, :d_in].double()
    return delta.reshape(layer.weight.shape)


def test_projections_are_seeded_kaiming_uniform():
    rank, max_in, max_out, seed = 6, 40, 25, 1234
    proj_a, proj_b = vera_projections(rank, max_in, max_out, seed)
    gen = torch.Generator().manual_seed(seed)
    bound_a = math.sqrt(2.0) * math.sqrt(3.0 / max_in)  # ReLU gain, fan_in = max_in
    bound_b = math.sqrt(2.0) * math.sqrt(3.0 / rank)  # fan_in of (max_out, r) is r
    ref_a = torch.empty(rank, max_in).uniform_(-bound_a, bound_a, generator=gen)
    ref_b = torch.empty(max_out, rank).uniform_(-bound_b, bound_b, generator=gen)
    assert torch.equal(proj_a, ref_a) and torch.equal(proj_b, ref_b)
    other_a, _ = vera_projections(rank, max_in, max_out, seed + 1)
    assert not torch.equal(proj_a, other_a)
    # the global RNG plays no part (DDP ranks with different seeds agree)
    torch.manual_seed(99)
    again_a, again_b = vera_projections(rank, max_in, max_out, seed)
    assert torch.equal(again_a, proj_a) and torch.equal(again_b, proj_b)


def test_init_values_and_shared_state_registered_once():
    model = TwoLinear()
    adapter = _inject(model, targets=['small', 'tall'], rank=4, d_initial=0.25)
    assert isinstance(model.small, VeRALinear) and isinstance(model.tall, VeRALinear)
    # A sized by the largest d_in (20), B by the largest d_out (30)
    assert adapter.vera_A.shape == (4, 20) and adapter.vera_B.shape == (30, 4)
    for layer in (model.small, model.tall):
        assert layer._adapter is adapter
        assert list(layer.children()) == []  # no registered reference, no nn.Linear child
        assert torch.equal(layer.vera_lambda_b, torch.zeros(layer.out_features))
        assert torch.equal(layer.vera_lambda_d, torch.full((4,), 0.25))
    keys = list(model.state_dict())
    assert keys.count('adapter.vera_A') == 1 and keys.count('adapter.vera_B') == 1
    assert [k for k in keys if k.endswith(('vera_A', 'vera_B'))] == ['adapter.vera_A',
                                                                    'adapter.vera_B']
    assert 'small.weight' in keys and 'tall.bias' in keys  # base keys unchanged


@pytest.mark.parametrize('linear_forward', ['factorised', 'merged'])
def test_linear_matches_float64_reference(linear_forward):
    torch.manual_seed(0)
    model = TwoLinear().double()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    _inject(model, targets=['small', 'tall'], rank=5, linear_forward=linear_forward)
    model.double()
    _randomize_lambdas(model)
    adapter = model.adapter
    x = torch.randn(3, 4, 20, dtype=torch.float64)
    out_small, out_tall = model(x)
    for layer, name, inp, out in ((model.small, 'small', x, out_small),
                                  (model.tall, 'tall', x[..., :7], out_tall)):
        proj_a = adapter.vera_A[:, :inp.shape[-1]]
        proj_b = adapter.vera_B[:layer.out_features]
        # h = W0 x + Λ_b B Λ_d A x, written out per formula
        ref = inp @ base[f'{name}.weight'].T + base[f'{name}.bias'] + \
            layer.vera_lambda_b.detach() * ((layer.vera_lambda_d.detach() * (inp @ proj_a.T))
                                            @ proj_b.T)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.get_delta_weight(),
                                   _reference_delta(layer, adapter.vera_A, adapter.vera_B))


CONV_CASES = [  # (in, out, kernel, stride, padding, dilation, groups, padding_mode)
    (6, 10, 1, 1, 0, 1, 1, 'zeros'),
    (6, 10, 3, 2, 1, 1, 1, 'zeros'),
    (6, 10, 3, 1, 2, 2, 1, 'zeros'),
    (3, 8, 7, 2, 3, 1, 1, 'zeros'),
    (6, 10, (3, 1), (1, 2), (1, 0), 1, 1, 'zeros'),
    (6, 10, 3, 1, 1, 1, 1, 'reflect'),
    (6, 10, 3, 1, 1, 1, 2, 'zeros'),
    (8, 12, 5, 3, 2, 1, 4, 'zeros'),
]


def _conv_reference(x, weight, bias, conv):
    if conv.padding_mode != 'zeros':
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        return F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation, conv.groups)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


# the factorised forward needs groups == 1 (refusal tested below)
@pytest.mark.parametrize('case,conv_forward', [(c, 'merged') for c in CONV_CASES] +
                         [(c, 'factorised') for c in CONV_CASES if c[6] == 1])
def test_conv_matches_merged_weight_reference(case, conv_forward):
    cin, cout, k, stride, pad, dil, groups, mode = case
    torch.manual_seed(1)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups, bias=True, padding_mode=mode)
    model = ConvHolder(conv).double()
    weight0, bias0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    _inject(model, targets=['conv', 'other'], rank=4, conv_forward=conv_forward)
    model.double()
    _randomize_lambdas(model, seed=3)
    wrapped = model.conv
    assert isinstance(wrapped, VeRAConv2d)
    x = torch.randn(2, cin, 11, 13, dtype=torch.float64)
    delta = _reference_delta(wrapped, model.adapter.vera_A, model.adapter.vera_B)
    assert delta.abs().max() > 0
    ref = _conv_reference(x, weight0 + delta, bias0, conv)
    torch.testing.assert_close(wrapped(x), ref, rtol=1e-10, atol=1e-10)


def test_conv_factorised_refuses_groups_and_merged_refuses_dropout():
    model = ConvHolder(nn.Conv2d(4, 8, 3, groups=2))
    with pytest.raises(ValueError, match='groups=2'):
        _inject(model, targets=['conv'], rank=4, conv_forward='factorised')
    model = ConvHolder(nn.Conv2d(4, 8, 3))
    with pytest.raises(ValueError, match='dropout'):
        _inject(model, targets=['conv'], rank=4, dropout=0.1)


def test_merge_unmerge_round_trip():
    torch.manual_seed(2)
    model = ConvHolder(nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 4, 1))
    _inject(model, targets=['conv', 'other'], rank=8)
    _randomize_lambdas(model)
    x = torch.randn(2, 3, 9, 9)
    weight0 = model.conv.weight.detach().clone()
    before = model.conv(x)
    assert merge_adapters(model) == 2
    assert not torch.equal(model.conv.weight, weight0)
    torch.testing.assert_close(model.conv(x), before, rtol=0, atol=1e-5)
    # merged weight is exactly W0 + ΔW
    torch.testing.assert_close(model.conv.weight.double(), weight0.double() + _reference_delta(
        model.conv, model.adapter.vera_A, model.adapter.vera_B), rtol=0, atol=1e-6)
    unmerge_adapters(model)
    assert torch.equal(model.conv.weight, weight0)
    assert torch.equal(model.conv(x), before)


def test_save_projection_false_regenerates_bit_identically():
    def build(seed_key, global_seed):
        torch.manual_seed(global_seed)
        model = TwoLinear()
        _inject(model, targets=['small', 'tall'], rank=16, projection_prng_key=seed_key,
                save_projection=False)
        return model

    first, second = build(7, 0), build(7, 1)
    keys = set(first.state_dict())
    assert 'adapter.vera_prng_key' in keys
    assert not any(k.endswith(('vera_A', 'vera_B')) for k in keys)
    assert torch.equal(first.adapter.vera_A, second.adapter.vera_A)
    assert torch.equal(first.adapter.vera_B, second.adapter.vera_B)
    ref_a, ref_b = vera_projections(16, 20, 30, 7)
    assert torch.equal(first.adapter.vera_A, ref_a) and torch.equal(first.adapter.vera_B, ref_b)
    # a seed-only checkpoint with another seed rebuilds A/B from that seed on load
    other = build(3, 0)
    other.load_state_dict(first.state_dict())
    assert torch.equal(other.adapter.vera_A, ref_a) and torch.equal(other.adapter.vera_B, ref_b)
    assert int(other.adapter.vera_prng_key) == 7


def test_gradients_reach_only_lambdas():
    torch.manual_seed(3)
    model = TwoLinear()
    _inject(model, targets=['small', 'tall'], rank=4)
    x = torch.randn(5, 20)
    sum(o.square().sum() for o in model(x)).backward()
    for name, param in model.named_parameters():
        if 'vera_lambda' in name:
            assert param.requires_grad and param.grad is not None
        else:
            assert not param.requires_grad and param.grad is None, name
    # at init b = 0, so d receives an exactly zero gradient and b a non-zero one
    assert torch.count_nonzero(model.small.vera_lambda_d.grad) == 0
    assert model.small.vera_lambda_b.grad.abs().sum() > 0


class QVStack(nn.Module):
    """12 layers of 768x768 query/value projections (RoBERTa-base attention shapes)."""

    def __init__(self, depth=12, dim=768):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleDict(dict(query=nn.Linear(dim, dim), key=nn.Linear(dim, dim),
                               value=nn.Linear(dim, dim))) for _ in range(depth))


@pytest.mark.parametrize('rank,expected', [(1, 18_456), (16, 18_816), (256, 24_576)])
def test_trainable_count_roberta_base_qv(rank, expected):
    model = QVStack()
    _inject(model, targets=[r'layers\.\d+\.(query|value)'], rank=rank)
    # VeRA: Σ (d_out + r) over the 24 wrapped layers (paper Table 1 values for r = 1 and 256)
    assert 24 * (768 + rank) == expected
    assert count_trainable_parameters(model) == expected


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(4)
    model = TwoLinear()
    _inject(model, targets=['small', 'tall'], rank=8)
    _randomize_lambdas(model)
    x = torch.randn(4, 20)
    ref = model(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
        sum(o.float().sum() for o in out).backward()
    for o, r in zip(out, ref):
        torch.testing.assert_close(o.float(), r, rtol=5e-2, atol=5e-2)
    assert model.small.vera_lambda_b.grad.dtype == torch.float32


def test_bad_targets_raise_clear_errors():
    with pytest.raises(ValueError, match="'nothing_here' matches no"):
        _inject(TwoLinear(), targets=['small', 'nothing_here'], rank=4)
    attention = nn.Module()
    attention.mha = nn.MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match='NonDynamicallyQuantizableLinear'):
        _inject(attention, targets=[r'mha\.out_proj'], rank=4)
    with pytest.raises(ValueError, match='not a valid regex'):
        _inject(TwoLinear(), targets=['small('], rank=4)

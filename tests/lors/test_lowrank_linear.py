"""LORS^T: LowRankResidualLinear layers sharing one nn.Linear, against float64 references
written out term by term."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lors_det.models.lors import LowRankResidualLinear

IN, OUT = 12, 7
RANKS = [[2], [3, 1], [1, 2, 4]]  # layer i has K_i = i + 1 terms of different ranks


class Stack(nn.Module):
    """A stack as its users build it: the shared Linear owned once, the layers own the rest."""

    def __init__(self, shared_bias=False, **kwargs):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(IN, OUT, bias=shared_bias)
        self.layers = nn.ModuleList(
            LowRankResidualLinear(self.shared, rank=r, num_terms=len(r), **kwargs)
            for r in RANKS)


def randomize_private(stack):
    """Every private factor and bias non-zero (both factors of every term)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in stack.layers:
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if stack.shared.bias is not None:
            stack.shared.bias.copy_(torch.randn(OUT, generator=g))


def reference_weight(stack, i):
    """float64 ``W_shared + sum_k B_k A_k``, one outer product at a time."""
    layer = stack.layers[i]
    W = stack.shared.weight.detach().double().clone()
    B, A = layer.B.detach().double(), layer.A.detach().double()
    start = 0
    for r in RANKS[i]:
        for a in range(r):
            W += torch.outer(B[:, start + a], A[start + a])
        start += r
    return W


def reference_bias(stack, i):
    b = torch.zeros(OUT, dtype=torch.float64)
    for bias in (stack.shared.bias, stack.layers[i].bias):
        if bias is not None:
            b += bias.detach().double()
    return b


def reference_forward(stack, x, i):
    return x.double() @ reference_weight(stack, i).T + reference_bias(stack, i)


def test_ownership_shared_once_private_per_layer():
    stack = Stack()
    layer = stack.layers[1]
    assert layer.shared is stack.shared
    assert {n for n, _ in layer.named_parameters()} == {'B', 'A', 'bias'}
    assert set(layer.state_dict()) == {'B', 'A', 'bias'}
    # the shared weight appears once in the stack, under its owner
    assert [k for k in stack.state_dict() if 'weight' in k] == ['shared.weight']
    copied = copy.deepcopy(stack)
    assert all(layer.shared is copied.shared for layer in copied.layers)
    assert copied.shared is not stack.shared


@pytest.mark.parametrize('zero_init', ['A', 'B'])
@pytest.mark.parametrize('shared_bias', [False, True])
def test_init_every_layer_equals_shared_linear(zero_init, shared_bias):
    stack = Stack(shared_bias=shared_bias, zero_init=zero_init)
    x = torch.randn(5, IN)
    for layer in stack.layers:
        torch.testing.assert_close(layer(x), stack.shared(x), atol=1e-6, rtol=0)
        zero = layer.A if zero_init == 'A' else layer.B
        assert torch.count_nonzero(zero) == 0 and torch.count_nonzero(layer.bias) == 0


def test_kaiming_bound_is_per_term():
    stack = Stack(zero_init='A')  # B_k kaiming with fan-in r_k: bound sqrt(6 / r_k)
    layer = stack.layers[2]
    for (B, _), r in zip(layer.terms(), RANKS[2]):
        assert B.abs().max() <= (6 / r) ** 0.5
        assert B.abs().max() > 0.5 * (6 / r) ** 0.5  # not all tiny: the bound is the right one


@pytest.mark.parametrize('merge_min_rows', [0, None, 10 ** 9])  # always merged / auto / never
@pytest.mark.parametrize('shared_bias', [False, True])
def test_random_private_terms_match_reference(merge_min_rows, shared_bias):
    stack = Stack(shared_bias=shared_bias, merge_min_rows=merge_min_rows)
    randomize_private(stack)
    x = torch.randn(2, 3, IN)
    for i, layer in enumerate(stack.layers):
        torch.testing.assert_close(layer(x).double(), reference_forward(stack, x, i),
                                   atol=1e-5, rtol=0)


def test_training_path_choice_by_row_count():
    # merged costs n*h*d + d*R*h, factorised n*h*d + n*R*(h+d): factorised wins iff n < dh/(d+h)
    with torch.device('meta'):
        layer = LowRankResidualLinear(nn.Linear(32768, 256, bias=False), rank=8)
    assert layer.merge_min_rows == 255  # lors_spec 6.2: "below ... approx 254" rows
    d, h, R = 256, 32768, 8
    for n in (200, 254, 255, 600):
        factorised_cheaper = n * R * (h + d) < d * R * h
        assert (n >= layer.merge_min_rows) == (not factorised_cheaper)


def test_eval_uses_cached_merged_weight_and_invalidates():
    stack = Stack()
    randomize_private(stack)
    x = torch.randn(4, IN)
    layer = stack.layers[1]
    train_out = layer(x)
    calls = []
    original = layer.merged_weight
    layer.merged_weight = lambda: calls.append(1) or original()
    stack.eval()
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(layer(x), train_out, atol=1e-6, rtol=0)
        assert len(calls) == 1  # merged once, not once per forward
        layer.A.add_(0.5)  # in-place update, like an optimiser step
        torch.testing.assert_close(layer(x).double(), reference_forward(stack, x, 1),
                                   atol=1e-5, rtol=0)
        stack.shared.weight.add_(0.5)  # the shared weight moves: every layer's cache is stale
        torch.testing.assert_close(layer(x).double(), reference_forward(stack, x, 1),
                                   atol=1e-5, rtol=0)
        assert len(calls) == 3
        stack.double()  # new storage: the cached float32 copy must not be used
        torch.testing.assert_close(layer(x.double()), reference_forward(stack, x, 1),
                                   atol=1e-12, rtol=0)
    assert layer._merged_cache is not None
    stack.train()
    assert layer._merged_cache is None


def test_eval_with_autograd_still_backpropagates():
    stack = Stack().eval()
    randomize_private(stack)
    stack.layers[2](torch.randn(3, IN)).sum().backward()
    assert stack.layers[2].A.grad.abs().sum() > 0 and stack.shared.weight.grad.abs().sum() > 0


def test_fold_returns_the_dense_layer():
    stack = Stack(shared_bias=True)
    randomize_private(stack)
    x = torch.randn(6, IN)
    for i, layer in enumerate(stack.layers):
        weight, bias = layer.fold()
        assert weight.shape == (OUT, IN) and not weight.requires_grad
        torch.testing.assert_close(weight.double(), reference_weight(stack, i), atol=1e-6,
                                   rtol=0)
        torch.testing.assert_close(bias.double(), reference_bias(stack, i), atol=1e-6, rtol=0)
        torch.testing.assert_close(F.linear(x, weight, bias), layer(x), atol=1e-5, rtol=0)
    assert Stack(bias=False).layers[0].fold()[1] is None


@pytest.mark.parametrize('zero_init', ['A', 'B'])
def test_gradients_at_init(zero_init):
    """At init one factor of each term is 0. With G = dL/dW = g^T x (g = dL/dy):
    dL/dA = B^T G and dL/dB = G A^T, so only the zero factor gets a gradient. The shared weight
    gets the sum over the layers that ran."""
    stack = Stack(zero_init=zero_init).double()
    x = torch.randn(5, IN, dtype=torch.float64)
    g = torch.randn(5, OUT, dtype=torch.float64)
    layer = stack.layers[2]
    (layer(x) * g).sum().backward()
    G = g.T @ x
    torch.testing.assert_close(stack.shared.weight.grad, G)
    torch.testing.assert_close(layer.bias.grad, g.sum(0))
    torch.testing.assert_close(layer.A.grad, layer.B.detach().T @ G)
    torch.testing.assert_close(layer.B.grad, G @ layer.A.detach().T)
    live, dead = (layer.A, layer.B) if zero_init == 'A' else (layer.B, layer.A)
    assert live.grad.abs().min() > 0 and torch.count_nonzero(dead.grad) == 0
    assert stack.layers[0].A.grad is None  # other layers' private terms are not used
    (stack.layers[0](x) * g).sum().backward()
    torch.testing.assert_close(stack.shared.weight.grad, 2 * G)


@pytest.mark.parametrize('kwargs, key', [
    (dict(rank=0), 'rank'),
    (dict(rank=8), 'rank'),  # 8 > min(12, 7)
    (dict(rank=[2, 3], num_terms=1), 'rank'),
    (dict(rank=[2, 0], num_terms=2), r'rank\[1\]'),
    (dict(num_terms=0), 'num_terms'),
    (dict(zero_init='C'), 'zero_init'),
    (dict(merge_min_rows=-1), 'merge_min_rows'),
])
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f'^{key}: '):
        LowRankResidualLinear(nn.Linear(IN, OUT), **{'rank': 2, **kwargs})


def test_parameter_count_formula():
    stack = Stack(shared_bias=True)
    total_rank = sum(sum(r) for r in RANKS)
    assert sum(p.numel() for p in stack.parameters()) == \
        OUT * IN + OUT + total_rank * (IN + OUT) + 3 * OUT
    # lors_spec 3 / Table 1: AdaMixer's out projection, r=8, 6 stages, no shared bias
    with torch.device('meta'):
        shared = nn.Linear(32768, 256, bias=False)
        layers = nn.ModuleList(LowRankResidualLinear(shared, rank=8) for _ in range(6))
    private = sum(p.numel() for p in layers.parameters())
    assert shared.weight.numel() + private == 8_388_608 + 6 * (8 * 33_024 + 256)

"""LORS^T: LowRankResidualLinearStack against float64 references written out term by term."""
import copy

import pytest
import torch
import torch.nn.functional as F

from lors_det.models.lors import LowRankResidualLinearStack
from mmdet.registry import MODELS

IN, OUT = 12, 7
RANKS = [[2], [3, 1], [1, 2, 4]]  # layer i has K_i = i + 1 terms of different ranks


def make_stack(**kwargs):
    torch.manual_seed(0)
    cfg = dict(in_features=IN, out_features=OUT, num_layers=3, ranks=RANKS, num_terms=[1, 2, 3])
    cfg.update(kwargs)
    return LowRankResidualLinearStack(**cfg)


def randomize_private(stack):
    """Give every private factor and bias non-zero values (both factors of every pair)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*stack.private_A, *stack.private_B, *(stack.private_bias or [])]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if stack.shared_bias is not None:
            stack.shared_bias.copy_(torch.randn(OUT, generator=g))


def reference_weight(stack, i):
    """float64 ``W_shared + sum_k B_ik A_ik``, one term at a time from the per-term ranks."""
    W = stack.shared_weight.detach().double().clone()
    B, A = stack.private_B[i].detach().double(), stack.private_A[i].detach().double()
    start = 0
    for r in stack.term_ranks[i]:
        for a in range(r):  # a rank-r product is a sum of r outer products
            W += torch.outer(B[:, start + a], A[start + a])
        start += r
    return W


def reference_bias(stack, i):
    b = torch.zeros(OUT, dtype=torch.float64)
    if stack.shared_bias is not None:
        b += stack.shared_bias.detach().double()
    if stack.private_bias is not None:
        b += stack.private_bias[i].detach().double()
    return b


def reference_forward(stack, x, i):
    return x.double() @ reference_weight(stack, i).T + reference_bias(stack, i)


@pytest.mark.parametrize('zero_init', ['A', 'B'])
@pytest.mark.parametrize('shared_bias', [False, True])
def test_init_every_layer_equals_shared_linear(zero_init, shared_bias):
    stack = make_stack(zero_init=zero_init, shared_bias=shared_bias)
    x = torch.randn(5, IN)
    W = stack.shared_weight.detach().double()
    expected = x.double() @ W.T
    if shared_bias:
        expected = expected + stack.shared_bias.detach().double()
    for i in range(3):
        zero, kaiming = ((stack.private_A[i], stack.private_B[i]) if zero_init == 'A' else
                         (stack.private_B[i], stack.private_A[i]))
        assert torch.count_nonzero(zero) == 0 and torch.all(kaiming != 0)
        assert torch.count_nonzero(stack.private_bias[i]) == 0
        torch.testing.assert_close(stack(x, i).double(), expected, atol=1e-5, rtol=0)


def test_kaiming_bound_is_per_term():
    """zero_init='A': each B_ik slice is Kaiming-uniform with its own fan-in r_ik."""
    torch.manual_seed(0)
    stack = LowRankResidualLinearStack(64, 4000, 1, ranks=[[1, 64]], num_terms=[2])
    (B1, _), (B2, _) = stack.factors(0)
    # U(-b, b) with b = sqrt(6 / fan_in); 4000 draws reach close to the bound
    assert 0.95 * 6 ** 0.5 < B1.abs().max() <= 6 ** 0.5
    assert 0.95 * (6 / 64) ** 0.5 < B2.abs().max() <= (6 / 64) ** 0.5


@pytest.mark.parametrize('merge_min_rows', [0, None, 10 ** 9])  # always merged / auto / never
@pytest.mark.parametrize('shared_bias', [False, True])
def test_random_private_terms_match_reference(merge_min_rows, shared_bias):
    stack = make_stack(merge_min_rows=merge_min_rows, shared_bias=shared_bias)
    randomize_private(stack)
    x = torch.randn(2, 3, IN)
    for i in range(3):
        torch.testing.assert_close(stack(x, i).double(), reference_forward(stack, x, i),
                                   atol=1e-5, rtol=0)
    stack64 = copy.deepcopy(stack).double()
    for i in range(3):
        torch.testing.assert_close(stack64(x.double(), i), reference_forward(stack, x, i),
                                   atol=1e-12, rtol=0)


def test_training_path_choice_by_row_count():
    # merged costs n*h*d + d*R*h, factorised n*h*d + n*R*(h+d): factorised wins iff n < dh/(d+h)
    with torch.device('meta'):
        stack = LowRankResidualLinearStack(32768, 256, 6, ranks=8)
    d, h, R = 256, 32768, 8
    for n in (1, 200, 254, 255, 256, 600):
        factorised_cheaper = n * R * (h + d) < d * R * h
        assert stack.uses_merged_path(n) == (not factorised_cheaper)
    assert stack.merge_min_rows == 255  # lors_spec 6.2: "below ... approx 254" rows


def test_eval_uses_cached_merged_weights_and_invalidates():
    stack = make_stack()
    randomize_private(stack)
    x = torch.randn(4, IN)
    train_out = [stack(x, i) for i in range(3)]

    calls = []
    original = stack.merged_weight
    stack.merged_weight = lambda i: calls.append(i) or original(i)
    stack.eval()
    with torch.no_grad():
        for _ in range(3):
            for i in range(3):
                torch.testing.assert_close(stack(x, i), train_out[i], atol=1e-6, rtol=0)
        assert sorted(calls) == [0, 1, 2]  # merged once per layer, not once per forward

        stack.private_A[1].add_(0.5)  # in-place update, like an optimiser step
        torch.testing.assert_close(stack(x, 1).double(), reference_forward(stack, x, 1),
                                   atol=1e-5, rtol=0)
        assert sorted(calls) == [0, 1, 1, 2]

        state = {k: v + 1 for k, v in stack.state_dict().items()}
        stack.load_state_dict(state)
        torch.testing.assert_close(stack(x, 2).double(), reference_forward(stack, x, 2),
                                   atol=1e-5, rtol=0)

        stack.double()  # new storage: cached float32 copy must not be used
        assert stack(x.double(), 0).dtype == torch.float64
        torch.testing.assert_close(stack(x.double(), 0), reference_forward(stack, x, 0),
                                   atol=1e-12, rtol=0)
    assert stack._merged_cache
    stack.train()
    assert not stack._merged_cache


def test_eval_with_autograd_still_backpropagates():
    stack = make_stack().eval()
    randomize_private(stack)
    stack(torch.randn(3, IN), 2).sum().backward()
    assert stack.private_A[2].grad is not None and stack.private_A[2].grad.abs().sum() > 0


def test_fold_returns_dense_per_layer_weights():
    stack = make_stack(shared_bias=True)
    randomize_private(stack)
    folded = stack.fold()
    x = torch.randn(6, IN)
    assert len(folded) == 3
    for i, (weight, bias) in enumerate(folded):
        assert weight.shape == (OUT, IN) and not weight.requires_grad
        torch.testing.assert_close(weight.double(), reference_weight(stack, i), atol=1e-6, rtol=0)
        torch.testing.assert_close(bias.double(), reference_bias(stack, i), atol=1e-6, rtol=0)
        torch.testing.assert_close(F.linear(x, weight, bias), stack(x, i), atol=1e-5, rtol=0)
    no_bias = make_stack(private_bias=False)
    assert all(b is None for _, b in no_bias.fold())


@pytest.mark.parametrize('zero_init', ['A', 'B'])
def test_gradients_at_init(zero_init):
    """At init one factor of each pair is 0. With G = dL/dW_i = g^T x (g = dL/dy):
    dL/dA_i = B_i^T G and dL/dB_i = G A_i^T. So with A = 0 only A gets a gradient (B's is exactly
    0 until A moves); with B = 0 only B does. The shared weight and the bias always get one."""
    stack = make_stack(zero_init=zero_init).double()
    x = torch.randn(5, IN, dtype=torch.float64)
    g = torch.randn(5, OUT, dtype=torch.float64)
    i = 2
    (stack(x, i) * g).sum().backward()
    G = g.T @ x
    B, A = stack.private_B[i].detach(), stack.private_A[i].detach()
    torch.testing.assert_close(stack.shared_weight.grad, G)
    torch.testing.assert_close(stack.private_bias[i].grad, g.sum(0))
    torch.testing.assert_close(stack.private_A[i].grad, B.T @ G)
    torch.testing.assert_close(stack.private_B[i].grad, G @ A.T)
    live, dead = ((stack.private_A[i], stack.private_B[i]) if zero_init == 'A' else
                  (stack.private_B[i], stack.private_A[i]))
    assert live.grad.abs().min() > 0 and torch.count_nonzero(dead.grad) == 0
    for other in (0, 1):  # other layers' private parameters are not used at all
        assert stack.private_A[other].grad is None and stack.private_B[other].grad is None


def test_gradients_reach_every_factor_once_both_are_nonzero():
    stack = make_stack()
    randomize_private(stack)
    for i in range(3):
        stack(torch.randn(4, IN), i).pow(2).sum().backward()
    for p in [stack.shared_weight, *stack.private_A, *stack.private_B, *stack.private_bias]:
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, key', [
    (dict(ranks=0), 'ranks'),
    (dict(ranks=[2, 8, 1], num_terms=1), 'ranks'),  # 8 > min(12, 7)
    (dict(ranks=[2, 3], num_terms=1), 'ranks'),
    (dict(ranks=[[2], [3], [1, 1, 1]], num_terms=[1, 2, 3]), r'ranks\[1\]'),
    (dict(ranks=[[2], [3, 0], [1, 1, 1]], num_terms=[1, 2, 3]), r'ranks\[1\]\[1\]'),
    (dict(ranks=2, num_terms=[1, 2]), 'num_terms'),
    (dict(ranks=2, num_terms=[1, 0, 1]), r'num_terms\[1\]'),
    (dict(ranks=2, num_terms=1, num_layers=0), 'num_layers'),
    (dict(ranks=2, num_terms=1, zero_init='C'), 'zero_init'),
    (dict(ranks=2, num_terms=1, merge_min_rows=-1), 'merge_min_rows'),
])
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        make_stack(**kwargs)


def test_bad_layer_index_and_input():
    stack = make_stack()
    with pytest.raises(IndexError, match='layer_idx=3'):
        stack(torch.randn(2, IN), 3)
    with pytest.raises(ValueError, match='in_features=12'):
        stack(torch.randn(2, IN + 1), 0)


def test_parameter_count_formula_and_registry():
    stack = MODELS.build(dict(type='LowRankResidualLinearStack', in_features=IN,
                              out_features=OUT, num_layers=3, ranks=RANKS, num_terms=[1, 2, 3],
                              shared_bias=True))
    assert isinstance(stack, LowRankResidualLinearStack)
    total_rank = sum(sum(r) for r in RANKS)
    expected = OUT * IN + OUT + total_rank * (IN + OUT) + 3 * OUT
    assert sum(p.numel() for p in stack.parameters()) == expected
    # lors_spec 3 / Table 1: AdaMixer out projection, r=8, 6 stages, no shared bias
    with torch.device('meta'):
        out_proj = LowRankResidualLinearStack(32768, 256, 6, ranks=8)
    assert sum(p.numel() for p in out_proj.parameters()) == 8_388_608 + 6 * (8 * 33_024 + 256)
    assert 'ranks=[[8], [8], [8], [8], [8], [8]]' in repr(out_proj)

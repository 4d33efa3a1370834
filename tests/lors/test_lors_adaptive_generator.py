"""LORS^A: AdaptiveLowRankResidualGenerator against float64 references with explicit loops."""
import copy

import pytest
import torch

from lors_det.models.lors import AdaptiveLowRankResidualGenerator
from lors_det.models.lors.lowrank_ops import residual_macs

D, ROWS, COLS, G = 10, 6, 9, 2
RANKS, TERMS = [2, 3, 4], [1, 3, 2]


def make_generator(**kwargs):
    torch.manual_seed(0)
    cfg = dict(query_dim=D, rows=ROWS, cols=COLS, num_layers=3, ranks=RANKS, num_terms=TERMS,
               groups=G)
    cfg.update(kwargs)
    return AdaptiveLowRankResidualGenerator(**cfg)


def randomize(gen):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in gen.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def reference(gen, query, i):
    """float64 W_i(q) for q of shape [Q, D], one query / group / term at a time."""
    q = query.double()
    Ws = gen.shared_generator.weight.detach().double()
    bs = gen.shared_generator.bias.detach().double()
    We = gen.core_generators[i].weight.detach().double()
    be = gen.core_generators[i].bias.detach().double()
    B, A = gen.private_B[i].detach().double(), gen.private_A[i].detach().double()
    k, K = RANKS[i], TERMS[i]
    out = torch.zeros(len(q), G, ROWS, COLS, dtype=torch.float64)
    for n in range(len(q)):
        shared = (Ws @ q[n] + bs).view(G, ROWS, COLS)
        cores = (We @ q[n] + be).view(G * K, k, k)
        for g in range(G):
            out[n, g] = shared[g]
            for j in range(K):
                out[n, g] += B[g * K + j] @ cores[g * K + j] @ A[g * K + j]
    return out


def test_init_every_layer_equals_shared_generator():
    gen = make_generator()
    query = torch.randn(4, D)
    bias = gen.shared_generator.bias.detach().double().view(G, ROWS, COLS)
    for i in range(3):
        assert torch.count_nonzero(gen.core_generators[i].weight) == 0
        assert torch.count_nonzero(gen.core_generators[i].bias) == 0
        out = gen(query, i).double()
        # zero shared weight: every query gets the bias, i.e. the same matrix
        torch.testing.assert_close(out, bias.expand(4, G, ROWS, COLS), atol=1e-7, rtol=0)
        torch.testing.assert_close(out, reference(gen, query, i), atol=1e-7, rtol=0)
    assert torch.count_nonzero(gen.shared_generator.weight) == 0
    bound = 1 / D ** 0.5
    assert gen.shared_generator.bias.abs().max() <= bound
    assert all(torch.all(p != 0) for p in [*gen.private_B, *gen.private_A])


@pytest.mark.parametrize('strategy', ['auto', 'materialize', 'sequential'])
def test_random_private_terms_match_reference(strategy):
    gen = make_generator()
    randomize(gen)
    query = torch.randn(5, D)
    x = torch.randn(5, G, 7, ROWS)
    for i in range(3):
        ref = reference(gen, query, i)
        torch.testing.assert_close(gen(query, i).double(), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(gen.matmul(x, query, i, strategy=strategy).double(),
                                   x.double() @ ref, atol=1e-5, rtol=0)
    gen64 = copy.deepcopy(gen).double()
    for i in range(3):
        ref = reference(gen, query, i)
        torch.testing.assert_close(gen64(query.double(), i), ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(gen64.matmul(x.double(), query.double(), i, strategy),
                                   x.double() @ ref, atol=1e-12, rtol=0)


def test_extra_batch_dims():
    gen = make_generator()
    randomize(gen)
    query = torch.randn(2, 3, D)
    ref = reference(gen, query.reshape(6, D), 1).view(2, 3, G, ROWS, COLS)
    torch.testing.assert_close(gen(query, 1).double(), ref, atol=1e-5, rtol=0)


def test_residual_macs_match_lors_spec_numbers():
    """lors_spec 6.3, default AdaMixer-LORS dims C=128, P_in=64, P_out=128, k=16, one term."""
    C, P_in, P_out, k = 128, 64, 128, 16
    m = residual_macs(rows=C, cols=C, rank=k, terms=1, num_vectors=P_in)
    assert m == dict(materialize=C * k * k + C * k * C, sequential=P_in * k * (2 * C + k))
    assert (m['materialize'], m['sequential']) == (294_912, 278_528)  # "295 K" / "279 K"
    # S (P_out x P_in) on C columns, as a right product x^T S^T: rows=P_in, cols=P_out
    s = residual_macs(rows=P_in, cols=P_out, rank=k, terms=1, num_vectors=C)
    assert s['sequential'] == C * k * (P_in + k + P_out) == 425_984  # "426 K"
    # spec's 164 K multiplies sl E first; E sr first is cheaper: k*k*P_in + P_out*k*P_in
    assert s['materialize'] == k * k * P_in + P_out * k * P_in == 147_456


def test_gradients_at_init():
    """E_i(q) = 0 at init, so dL/dB_i = dL/dW (E A)^T and dL/dA_i = (B E)^T dL/dW vanish; the
    core generator gets dL/dE = B^T dL/dW A^T != 0 and learns first. The shared generator's zero
    weight still gets dL/dW_shared = dL/dout q^T."""
    gen = make_generator()
    query, x = torch.randn(4, D), torch.randn(4, G, 5, ROWS)
    i = 1
    gen.matmul(x, query, i, strategy='sequential').pow(2).sum().backward()
    for p in [gen.shared_generator.weight, gen.shared_generator.bias,
              gen.core_generators[i].weight, gen.core_generators[i].bias]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    for p in (gen.private_B[i], gen.private_A[i]):
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0
    assert gen.core_generators[0].weight.grad is None and gen.private_B[2].grad is None

    randomize(gen)
    gen.zero_grad()
    gen.matmul(x, query, i, strategy='materialize').pow(2).sum().backward()
    for p in [gen.private_B[i], gen.private_A[i], gen.core_generators[i].weight]:
        assert p.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, key', [
    (dict(ranks=7), 'ranks'),  # > min(6, 9)
    (dict(ranks=[2, 0, 1]), r'ranks\[1\]'),
    (dict(num_terms=[1, 1]), 'num_terms'),
    (dict(groups=0), 'groups'),
    (dict(rows=0), 'rows'),
])
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        make_generator(**kwargs)
    with pytest.raises(ValueError, match='strategy'):
        make_generator().matmul(torch.randn(1, G, 2, ROWS), torch.randn(1, D), 0, 'fast')


def test_parameter_count_formula():
    gen = make_generator()
    expected = (D + 1) * G * ROWS * COLS + sum(
        (D + 1) * G * K * k * k + G * K * k * (ROWS + COLS) for k, K in zip(RANKS, TERMS))
    assert sum(p.numel() for p in gen.parameters()) == expected
    # lors_spec Table 1 LORS^A "after" at r=8 for one AdaMixer group (C=64, P_in=32, P_out=128):
    # shared/6 + two private generators + factors of M (64x64) and S (128x32) = 0.386 M
    with torch.device('meta'):
        m = AdaptiveLowRankResidualGenerator(256, 64, 64, 6, ranks=8)
        s = AdaptiveLowRankResidualGenerator(256, 128, 32, 6, ranks=8)
    shared = sum(p.numel() for p in [*m.shared_generator.parameters(),
                                     *s.shared_generator.parameters()])
    per_layer = sum(p.numel() for gen_ in (m, s) for p in [
        *gen_.core_generators[0].parameters(), gen_.private_B[0], gen_.private_A[0]])
    assert round((shared / 6 + per_layer) / 1e6, 2) == 0.39

"""LORS^A: AdaptiveLowRankResidual against float64 references written term by term, and its
cost model against lors_spec.md section 6.3."""
import pytest
import torch

from lors_det.models.lors import AdaptiveLowRankResidual

D, ROWS, COLS, G, K, RANK = 9, 5, 7, 2, 3, 4


def make(**kwargs):
    torch.manual_seed(0)
    cfg = dict(query_dim=D, rows=ROWS, cols=COLS, groups=G, rank=RANK, num_terms=K)
    return AdaptiveLowRankResidual(**{**cfg, **kwargs})


def randomize(module):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def reference(module, query):
    """float64 ``sum_j B_gj E_gj(q) A_gj`` for one query vector: ``[G, rows, cols]``."""
    p = {k: v.detach().double() for k, v in module.named_parameters()}
    cores = p['core_generator.weight'] @ query.double() + p['core_generator.bias']
    cores = cores.view(G, K, RANK, RANK)
    out = torch.zeros(G, ROWS, COLS, dtype=torch.float64)
    for g in range(G):
        for j in range(K):
            t = g * K + j
            out[g] += p['B'][t] @ cores[g, j] @ p['A'][t]
    return out


def test_init_residual_is_zero_and_factors_kaiming():
    module = make()
    query = torch.randn(4, D)
    assert torch.count_nonzero(module(query)) == 0
    assert torch.count_nonzero(module.core_generator.weight) == 0
    # kaiming_uniform_ of a 3-d tensor (G*K, d, k): torch's fan-in is d * k
    assert module.B.abs().max() <= (6 / (ROWS * RANK)) ** 0.5
    assert module.A.abs().max() <= (6 / (RANK * COLS)) ** 0.5
    assert module.B.abs().max() > 0


def test_random_terms_match_reference_in_every_form():
    module = make().double()
    randomize(module)
    query = torch.randn(3, D, dtype=torch.float64)
    x = torch.randn(3, G, 6, ROWS, dtype=torch.float64)   # 6 row vectors per group
    y = torch.randn(3, G, COLS, 5, dtype=torch.float64)   # for residual @ y
    cores = module.cores(query)
    matrix = module.matrix(cores)
    for q in range(3):
        torch.testing.assert_close(matrix[q], reference(module, query[q]))
    torch.testing.assert_close(module.apply_to(x, cores), x @ matrix)
    torch.testing.assert_close(module.apply_transposed_to(y.mT, cores).mT, matrix @ y)
    # extra batch dims
    torch.testing.assert_close(module(query.view(1, 3, D))[0], matrix)


def test_rows_larger_than_cols_uses_the_other_association():
    module = make(rows=COLS, cols=ROWS).double()
    randomize(module)
    query = torch.randn(2, D, dtype=torch.float64)
    B, A = module.factors()
    cores = module.cores(query)
    expected = torch.einsum('gjdk,qgjkl,gjlh->qgdh', B, cores, A)
    torch.testing.assert_close(module.matrix(cores), expected)


def test_fold_affine_is_the_residual_as_a_function_of_the_query():
    module = make().double()
    randomize(module)
    weight, bias = module.fold_affine()
    query = torch.randn(5, D, dtype=torch.float64)
    torch.testing.assert_close((query @ weight.T + bias).view(5, G, ROWS, COLS), module(query))


def test_macs_match_lors_spec_numbers():
    """lors_spec 6.3 for the released dims (C=128, P_in=64, P_out=128, k=16, one term): M
    materialised 295 K vs sequential 279 K; S materialised 164 K vs sequential 426 K."""
    with torch.device('meta'):
        m = AdaptiveLowRankResidual(256, 128, 128, groups=2, rank=16)
        s = AdaptiveLowRankResidual(256, 128, 64, groups=2, rank=16)
    assert m.macs(num_vectors=64) == dict(materialize=294_912, sequential=278_528)
    assert s.macs(num_vectors=128) == dict(materialize=147_456, sequential=425_984)


def test_gradients_at_init_reach_the_core_generator_only():
    """E = 0 at init: dL/dB = dL/dW (E A)^T = 0 and dL/dA = 0, while dL/dE = B^T dL/dW A^T is
    not, so the core generator learns first."""
    module = make().double()
    query = torch.randn(4, D, dtype=torch.float64)
    (module(query) * torch.randn(4, G, ROWS, COLS, dtype=torch.float64)).sum().backward()
    assert torch.count_nonzero(module.B.grad) == 0 and torch.count_nonzero(module.A.grad) == 0
    assert module.core_generator.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, key', [
    (dict(rank=0), 'rank'), (dict(rank=6), 'rank'),  # 6 > min(5, 7)
    (dict(num_terms=0), 'num_terms'), (dict(groups=0), 'groups'), (dict(rows=0), 'rows'),
])
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f'^{key}: '):
        make(**kwargs)


def test_parameter_count_formula():
    module = make()
    assert sum(p.numel() for p in module.parameters()) == \
        (D + 1) * G * K * RANK ** 2 + G * K * RANK * (ROWS + COLS)

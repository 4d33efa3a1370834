"""LORSAdaptiveMixingStack against a float64 AdaMixer-style reference written with explicit loops,
and its parameter count against lors_spec.md section 3."""
import copy

import pytest
import torch

from lors_det.models.lors import LORSAdaptiveMixingStack
from mmdet.registry import MODELS

# small dims, all different so a transposed/mis-split tensor cannot go unnoticed
D, G, C, P_IN, P_OUT = 16, 2, 5, 6, 7
KS, KG, RS = [3, 2, 4], [1, 2, 3], [2, 4, 3]
SMALL = dict(num_stages=3, content_dim=D, feat_channels=G * C, n_groups=G, in_points=P_IN,
             out_points=P_OUT, kernel_sizes=KS, kernel_groups=KG, out_proj_ranks=RS)


def make_stack(**kwargs):
    torch.manual_seed(0)
    return LORSAdaptiveMixingStack(**{**SMALL, **kwargs})


def randomize(stack):
    """Every parameter non-zero, the zero-initialised generators and LORS^T factor included."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in stack.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def layer_norm_2d(t, eps=1e-5):
    mean = t.mean()
    var = ((t - mean) ** 2).mean()
    return (t - mean) / torch.sqrt(var + eps)


def reference(stack, sampled, query, i, shared_only=False):
    """AdaMixer adaptive mixing (adamixer_spec 1.7(b) steps 5-8) in float64, one query and group
    at a time. ``shared_only`` drops every private LORS term (the zero-init expectation)."""
    p = {k: v.detach().double() for k, v in stack.named_parameters()}
    k, K = KS[i], KG[i]
    B, N = query.shape[:2]
    W_out = p['out_proj.shared_weight'].clone()
    if not shared_only:
        W_out += p[f'out_proj.private_B.{i}'] @ p[f'out_proj.private_A.{i}']
    out = torch.zeros(B, N, D, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            q = query[b, n].double()
            params = p['parameter_generator.weight'] @ q + p['parameter_generator.bias']
            cores = (p[f'core_generators.{i}.weight'] @ q + p[f'core_generators.{i}.bias'])
            cores = cores.view(2, G * K, k, k)
            chunks = []
            for g in range(G):
                chunk = params[g * (C * C + P_IN * P_OUT):(g + 1) * (C * C + P_IN * P_OUT)]
                M = chunk[:C * C].reshape(C, C).clone()      # C_in x C_out
                S = chunk[C * C:].reshape(P_OUT, P_IN).clone()
                if not shared_only:
                    for j in range(K):
                        t = g * K + j
                        M += p[f'ml.{i}'][t] @ cores[0, t] @ p[f'mr.{i}'][t]
                        S += p[f'sl.{i}'][t] @ cores[1, t] @ p[f'sr.{i}'][t]
                h = torch.relu(layer_norm_2d(sampled[b, n, g].double() @ M))   # P_in x C
                h = torch.relu(layer_norm_2d(S @ h))                             # P_out x C
                chunks.append(h.flatten())                   # (point, channel) within the group
            flat = torch.cat(chunks)                         # (group, point, channel)
            out[b, n] = W_out @ flat
            if not shared_only:
                out[b, n] += p[f'out_proj.private_bias.{i}']
    return out


def inputs(B=2, N=3):
    torch.manual_seed(2)
    return torch.randn(B, N, G, P_IN, C), torch.randn(B, N, D)


def test_init_every_stage_equals_shared_mixing():
    stack = make_stack()
    sampled, query = inputs()
    for i in range(3):
        expected = reference(stack, sampled, query, i, shared_only=True)
        torch.testing.assert_close(stack(sampled, query, i).double(), expected,
                                   atol=1e-5, rtol=0)
    assert torch.count_nonzero(stack.parameter_generator.weight) == 0
    for i in range(3):
        gen = stack.core_generators[i]
        assert torch.count_nonzero(gen.weight) == 0 and torch.count_nonzero(gen.bias) == 0
        assert torch.count_nonzero(stack.out_proj.private_bias[i]) == 0
    # stages differ only through private terms, so at init all stages agree
    torch.testing.assert_close(stack(sampled, query, 0), stack(sampled, query, 2),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize('channel', ['sequential', 'materialize'])
@pytest.mark.parametrize('spatial', ['sequential', 'materialize'])
def test_random_private_terms_match_reference(channel, spatial):
    stack = make_stack(channel_residual=channel, spatial_residual=spatial)
    randomize(stack)
    sampled, query = inputs()
    for i in range(3):
        torch.testing.assert_close(stack(sampled, query, i).double(),
                                   reference(stack, sampled, query, i), atol=1e-5, rtol=0)
    stack64 = copy.deepcopy(stack).double()
    torch.testing.assert_close(stack64(sampled.double(), query.double(), 2),
                               reference(stack, sampled, query, 2), atol=1e-10, rtol=0)


def test_cached_inference_equals_training_forward():
    stack = make_stack()
    randomize(stack)
    sampled, query = inputs(B=3, N=5)
    train_out = [stack(sampled, query, i) for i in range(3)]
    stack.eval()
    with torch.no_grad():
        for i in range(3):
            torch.testing.assert_close(stack(sampled, query, i), train_out[i], atol=1e-6, rtol=0)
            torch.testing.assert_close(stack(sampled, query, i), train_out[i], atol=1e-6, rtol=0)
    assert sorted(stack.out_proj._merged_cache) == [0, 1, 2]


def test_gradients_at_init_and_after_randomizing():
    """At init E^M = E^S = 0, so ml, mr, sl, sr get exactly zero gradient (each sits in a
    product with E), while the core generators get dL/dE = ml^T dL/dM mr^T != 0. In the out
    projection A = 0 (zero_init='A'): dL/dA = B^T dL/dW != 0, dL/dB = dL/dW A^T = 0. The shared
    generator (zero weight) and the shared out weight get full gradients."""
    stack = make_stack()
    sampled, query = inputs()
    i = 2
    stack(sampled, query, i).pow(2).sum().backward()
    live = [stack.parameter_generator.weight, stack.parameter_generator.bias,
            stack.core_generators[i].weight, stack.core_generators[i].bias,
            stack.out_proj.shared_weight, stack.out_proj.private_A[i],
            stack.out_proj.private_bias[i]]
    for p in live:
        assert p.grad is not None and p.grad.abs().sum() > 0
    for p in (stack.ml[i], stack.mr[i], stack.sl[i], stack.sr[i], stack.out_proj.private_B[i]):
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0
    for p in (stack.ml[0], stack.core_generators[1].weight, stack.out_proj.private_A[0]):
        assert p.grad is None  # other stages' private parameters are not used

    randomize(stack)
    stack.zero_grad()
    stack(sampled, query, i).pow(2).sum().backward()
    for p in live + [stack.ml[i], stack.mr[i], stack.sl[i], stack.sr[i],
                     stack.out_proj.private_B[i]]:
        assert p.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, key', [
    (dict(kernel_groups=[1, 2]), 'kernel_groups'),
    (dict(kernel_groups=[1, 0, 2]), r'kernel_groups\[1\]'),
    (dict(kernel_sizes=[3, 6, 2]), r'kernel_sizes\[1\]'),  # 6 > min(C=5, 6, 7)
    (dict(kernel_sizes=0), 'kernel_sizes'),
    (dict(out_proj_ranks=[2, 4]), 'out_proj_ranks'),
    (dict(out_proj_ranks=17), 'out_proj_ranks'),  # > min(70, D=16)
    (dict(feat_channels=11), 'feat_channels'),
    (dict(num_stages=0), 'num_stages'),
    (dict(channel_residual='fused'), 'channel_residual'),
    (dict(out_proj_zero_init='C'), 'zero_init'),
])
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        make_stack(**kwargs)


def test_bad_inputs():
    stack = make_stack()
    sampled, query = inputs()
    with pytest.raises(ValueError, match=r'\[B, N, 2, 6, 5\]'):
        stack(sampled.transpose(3, 4), query, 0)
    with pytest.raises(ValueError, match='query'):
        stack(sampled, query[:, :2], 0)
    with pytest.raises(IndexError, match='stage_idx=3'):
        stack(sampled, query, 3)


def lors_spec_counts(D, G, C, P_in, P_out, ks, Ks, rs):
    """lors_spec.md section 3, without the stage's out_norm LayerNorm (2*D per stage)."""
    H = G * C * P_out
    return dict(
        A_shared=D * G * (C * C + P_in * P_out) + G * (C * C + P_in * P_out),
        A_private=sum((D + 1) * 2 * G * K * k * k + G * K * k * (2 * C + P_out + P_in)
                      for k, K in zip(ks, Ks)),
        T_shared=D * H,
        T_private=sum(r * (H + D) + D for r in rs))


def module_counts(stack):
    n = lambda params: sum(p.numel() for p in params)  # noqa: E731
    return dict(
        A_shared=n(stack.parameter_generator.parameters()),
        A_private=n([*stack.core_generators.parameters(), *stack.ml, *stack.mr, *stack.sl,
                     *stack.sr]),
        T_shared=stack.out_proj.shared_weight.numel(),
        T_private=n([*stack.out_proj.private_A, *stack.out_proj.private_B,
                     *stack.out_proj.private_bias]))


def build_meta(**kwargs):
    with torch.device('meta'):  # no memory, no init cost: only shapes are counted
        return MODELS.build(dict(type='LORSAdaptiveMixingStack', **kwargs))


def test_default_parameter_count_matches_lors_spec():
    stack = build_meta()
    assert (stack.n_groups, stack.channels, stack.in_points, stack.out_points) == (2, 128, 64, 128)
    counts = module_counts(stack)
    # literal values from lors_spec.md section 3 (T_private there includes 6 LNs of 512)
    assert counts == dict(A_shared=12_632_064, A_private=3_330_048, T_shared=8_388_608,
                          T_private=1_589_760 - 6 * 512)
    assert counts == lors_spec_counts(256, 2, 128, 64, 128, [16] * 6, [1, 1, 2, 2, 3, 3], [8] * 6)
    total = sum(p.numel() for p in stack.parameters())
    # decoder total minus the six "rest of stage" blocks minus the six out_norm LayerNorms
    assert total == 35_348_264 - 6 * 1_567_964 - 6 * 512 == 25_937_408


def test_other_configs_parameter_counts():
    stack = build_meta(kernel_groups=[2] * 6, out_proj_ranks=16)
    counts = module_counts(stack)
    assert counts == lors_spec_counts(256, 2, 128, 64, 128, [16] * 6, [2] * 6, [16] * 6)
    default = sum(p.numel() for p in build_meta().parameters())
    # same sum K = 12 as the default; each extra LORS^T rank costs 6 * 33,024 (lors_spec 3)
    assert sum(counts.values()) == default + 8 * 6 * 33_024
    # each unit of K costs 277,504 (lors_spec 3): K = 1 x 6 has 6 units fewer than the default
    assert sum(p.numel() for p in build_meta(kernel_groups=1).parameters()) == \
        default - 6 * 277_504

    ks, Ks, rs = [8, 16, 4], [3, 1, 2], [2, 5, 8]
    stack = build_meta(num_stages=3, kernel_sizes=ks, kernel_groups=Ks, out_proj_ranks=rs,
                       n_groups=4, in_points=32)  # original AdaMixer dims G=4, P_in=32
    assert module_counts(stack) == lors_spec_counts(256, 4, 64, 32, 128, ks, Ks, rs)
    assert sum(p.numel() for p in stack.parameters()) == sum(module_counts(stack).values())
    assert 'kernel_groups=[3, 1, 2]' in repr(stack)


def test_init_weights_restores_lors_init_after_blanket_linear_reinit():
    """AdaMixer's stage init re-initialises every nn.Linear with xavier; the stack's
    ``init_weights`` (called by mmengine on children) must bring the zero inits back."""
    stack = make_stack()
    randomize(stack)
    for m in stack.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
    stack.init_weights()
    assert torch.count_nonzero(stack.parameter_generator.weight) == 0
    assert stack.parameter_generator.bias.abs().max() <= 1 / D ** 0.5
    for i in range(3):
        assert torch.count_nonzero(stack.core_generators[i].weight) == 0
        assert torch.count_nonzero(stack.core_generators[i].bias) == 0
        assert torch.count_nonzero(stack.out_proj.private_A[i]) == 0
        assert torch.count_nonzero(stack.out_proj.private_bias[i]) == 0
    sampled, query = inputs()
    torch.testing.assert_close(stack(sampled, query, 1).double(),
                               reference(stack, sampled, query, 1, shared_only=True),
                               atol=1e-5, rtol=0)

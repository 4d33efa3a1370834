"""LORSAdaptiveMixing on SharedMixingWeights against a float64 AdaMixer-style reference written
with explicit loops; the sharing switches; folding; the parameter count of lors_spec.md 3."""
import pytest
import torch
import torch.nn as nn

from lors_det.models.layers import AdaptiveMixing
from lors_det.models.lors import (LORSAdaptiveMixing, LowRankResidualLinear,
                                  SharedMixingWeights)

# small dims, all different so a transposed / mis-split tensor cannot go unnoticed
D, G, C, P_IN, P_OUT = 16, 2, 5, 6, 7
KS, KG, RS = [3, 2, 4], [1, 2, 3], [2, 4, 3]


class Stages(nn.Module):
    """Three stages' mixers on one shared module, owned here as a decoder owns them."""

    def __init__(self, share_generator=True, share_out_proj=True, **kwargs):
        super().__init__()
        torch.manual_seed(0)
        self.shared = SharedMixingWeights(D, C, G, P_IN, P_OUT, share_generator,
                                          share_out_proj)
        self.mixers = nn.ModuleList(
            LORSAdaptiveMixing(G * C, P_IN, P_OUT, G, D, shared=self.shared, generator_rank=k,
                               generator_num_terms=K, out_proj_rank=r, **kwargs)
            for k, K, r in zip(KS, KG, RS))


def randomize(stages):
    """Every parameter non-zero, the zero-initialised generators and LORS^T factor included."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in stages.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def layer_norm_2d(t, eps=1e-5):
    mean = t.mean()
    return (t - mean) / torch.sqrt(((t - mean) ** 2).mean() + eps)


def reference(stages, sampled, query, i, private=True):
    """AdaMixer's adaptive mixing (adamixer_spec 1.7(b) steps 5-8) in float64, one query and
    group at a time; ``private=False`` drops every private LORS term."""
    shared = {k: v.detach().double() for k, v in stages.shared.named_parameters()}
    mine = {k: v.detach().double() for k, v in stages.mixers[i].named_parameters()}
    k, K = KS[i], KG[i]
    W_out = shared['out_proj.weight'].clone()
    if private:
        W_out += mine['out_proj.B'] @ mine['out_proj.A']
    out = torch.zeros(*query.shape[:2], D, dtype=torch.float64)
    for b in range(query.shape[0]):
        for n in range(query.shape[1]):
            q = query[b, n].double()
            params = shared['parameter_generator.weight'] @ q + shared['parameter_generator.bias']
            cores = {part: (mine[f'{part}.core_generator.weight'] @ q +
                            mine[f'{part}.core_generator.bias']).view(G * K, k, k)
                     for part in ('channel_residual', 'spatial_residual')}
            chunks = []
            for g in range(G):
                chunk = params[g * (C * C + P_IN * P_OUT):(g + 1) * (C * C + P_IN * P_OUT)]
                M = chunk[:C * C].reshape(C, C).clone()  # C_in x C_out
                S = chunk[C * C:].reshape(P_OUT, P_IN).clone()
                if private:
                    for j in range(K):
                        t = g * K + j
                        M += (mine['channel_residual.B'][t] @ cores['channel_residual'][t] @
                              mine['channel_residual.A'][t])
                        S += (mine['spatial_residual.B'][t] @ cores['spatial_residual'][t] @
                              mine['spatial_residual.A'][t])
                h = torch.relu(layer_norm_2d(sampled[b, n, g].double() @ M))  # P_in x C
                h = torch.relu(layer_norm_2d(S @ h))  # P_out x C
                chunks.append(h.flatten())  # (point, channel) within the group
            out[b, n] = W_out @ torch.cat(chunks)  # (group, point, channel)
            if private:
                out[b, n] += mine['out_proj.bias']
    return out


def inputs(B=2, N=3):
    torch.manual_seed(2)
    return torch.randn(B, N, G, P_IN, C), torch.randn(B, N, D)


def test_ownership_shared_once_private_per_stage():
    stages = Stages()
    keys = set(stages.state_dict())
    assert {k for k in keys if k.startswith('shared.')} == {
        'shared.parameter_generator.weight', 'shared.parameter_generator.bias',
        'shared.out_proj.weight'}
    assert {k[len('mixers.1.'):] for k in keys if k.startswith('mixers.1.')} == {
        f'{part}.{name}' for part in ('channel_residual', 'spatial_residual')
        for name in ('core_generator.weight', 'core_generator.bias', 'B', 'A')} | {
        'out_proj.B', 'out_proj.A', 'out_proj.bias'}
    mixer = stages.mixers[2]
    assert mixer.shared is stages.shared and mixer.out_proj.shared is stages.shared.out_proj
    assert (mixer.channel_residual.num_terms, mixer.channel_residual.rank) == (KG[2], KS[2])


def test_init_every_stage_equals_the_shared_mixing():
    stages = Stages()
    sampled, query = inputs()
    for i, mixer in enumerate(stages.mixers):
        torch.testing.assert_close(mixer(sampled, query).double(),
                                   reference(stages, sampled, query, i, private=False),
                                   atol=1e-5, rtol=0)
    torch.testing.assert_close(stages.mixers[0](sampled, query), stages.mixers[2](sampled, query),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize('channel', ['sequential', 'materialize'])
@pytest.mark.parametrize('spatial', ['sequential', 'materialize'])
def test_random_private_terms_match_reference(channel, spatial):
    stages = Stages(channel_residual=channel, spatial_residual=spatial)
    randomize(stages)
    sampled, query = inputs()
    for i, mixer in enumerate(stages.mixers):
        torch.testing.assert_close(mixer(sampled, query).double(),
                                   reference(stages, sampled, query, i), atol=1e-4, rtol=1e-4)


def test_cached_inference_equals_training_forward():
    stages = Stages()
    randomize(stages)
    sampled, query = inputs()
    train = [m(sampled, query) for m in stages.mixers]
    stages.eval()
    with torch.no_grad():
        for mixer, expected in zip(stages.mixers, train):
            torch.testing.assert_close(mixer(sampled, query), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('share_generator, share_out_proj', [(True, False), (False, True)])
def test_one_switch_off_gives_that_part_back_to_every_stage(share_generator, share_out_proj):
    stages = Stages(share_generator=share_generator, share_out_proj=share_out_proj)
    for mixer in stages.mixers:
        if share_generator:  # LORS^A only: own plain out_proj, no LORS^T factors
            assert type(mixer.out_proj) is nn.Linear and mixer.channel_residual is not None
            assert not hasattr(stages.shared, 'out_proj')
        else:  # LORS^T only: own AdaMixer generator, no LORS^A terms
            assert isinstance(mixer.out_proj, LowRankResidualLinear)
            assert mixer.channel_residual is None and mixer.parameter_generator is not None
            assert not hasattr(stages.shared, 'parameter_generator')
    # each stage is then exactly a plain AdaptiveMixing with its (folded) weights
    randomize(stages)
    sampled, query = inputs()
    for mixer in stages.mixers:
        plain = AdaptiveMixing(G * C, P_IN, P_OUT, G, D)
        plain.load_state_dict(mixer.plain_state_dict())
        torch.testing.assert_close(plain(sampled, query), mixer(sampled, query), atol=1e-5,
                                   rtol=1e-5)


def test_plain_state_dict_folds_every_stage():
    stages = Stages().double()
    randomize(stages)
    sampled, query = (t.double() for t in inputs())
    for mixer in stages.mixers:
        plain = AdaptiveMixing(G * C, P_IN, P_OUT, G, D).double()
        plain.load_state_dict(mixer.plain_state_dict())  # strict: exactly AdaMixer's keys
        torch.testing.assert_close(plain(sampled, query), mixer(sampled, query), atol=1e-10,
                                   rtol=0)


def test_init_weights_restores_the_private_init_after_a_blanket_linear_reinit():
    """A stage re-initialises every nn.Linear (AdaMixer's xavier); the mixer's init_weights,
    called after it, brings the zero-initialised private terms back."""
    stages = Stages()
    randomize(stages)
    for mixer in stages.mixers:
        for m in mixer.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
        mixer.init_weights()
        for part in (mixer.channel_residual, mixer.spatial_residual):
            assert torch.count_nonzero(part.core_generator.weight) == 0
        assert torch.count_nonzero(mixer.out_proj.B) == 0
        assert torch.count_nonzero(mixer.out_proj.bias) == 0
    stages.shared.init_weights()
    sampled, query = inputs()
    torch.testing.assert_close(stages.mixers[1](sampled, query).double(),
                               reference(stages, sampled, query, 1, private=False), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize('kwargs, message', [
    (dict(generator_rank=6), '^generator_rank: '),  # > min(C=5, P_in, P_out)
    (dict(generator_num_terms=0), '^generator_num_terms: '),
    (dict(out_proj_rank=0), '^out_proj_rank: '),
    (dict(out_proj_zero_init='C'), '^out_proj_zero_init: '),
    (dict(channel_residual='fast'), '^channel_residual: '),
])
def test_invalid_options_name_the_key(kwargs, message):
    shared = SharedMixingWeights(D, C, G, P_IN, P_OUT)
    with pytest.raises(ValueError, match=message):
        LORSAdaptiveMixing(G * C, P_IN, P_OUT, G, D, shared=shared,
                           **{'generator_rank': 2, 'out_proj_rank': 2, **kwargs})


def test_shared_weights_of_other_dims_are_refused():
    shared = SharedMixingWeights(D, C, G, P_IN, P_OUT)
    with pytest.raises(ValueError, match='same n_groups, in_points'):
        LORSAdaptiveMixing(G * C, P_IN + 1, P_OUT, G, D, shared=shared, generator_rank=2)
    with pytest.raises(TypeError, match='SharedMixingWeights'):
        LORSAdaptiveMixing(G * C, P_IN, P_OUT, G, D)


def lors_spec_counts(num_stages, d, g, c, p_in, p_out, k, terms, r):
    """lors_spec.md section 3: A_shared, A_private, T_shared, T_private (T_private there also
    counts the stage's out_norm LayerNorm, which is not part of the mixer)."""
    h = g * c * p_out
    return dict(
        A_shared=d * g * (c * c + p_in * p_out) + g * (c * c + p_in * p_out),
        A_private=sum((d + 1) * 2 * g * K * k * k + g * K * k * (2 * c + p_out + p_in)
                      for K in terms),
        T_shared=d * h,
        T_private=num_stages * (r * (h + d) + d))


def test_released_parameter_count_matches_lors_spec():
    terms = [1, 1, 2, 2, 3, 3]
    with torch.device('meta'):
        shared = SharedMixingWeights(256, 128, 2, 64, 128)
        mixers = nn.ModuleList(
            LORSAdaptiveMixing(256, 64, 128, 2, 256, shared=shared, generator_num_terms=K)
            for K in terms)
    counts = dict(
        A_shared=sum(p.numel() for p in shared.parameter_generator.parameters()),
        T_shared=shared.out_proj.weight.numel(),
        A_private=sum(p.numel() for m in mixers for part in (m.channel_residual,
                                                            m.spatial_residual)
                      for p in part.parameters()),
        T_private=sum(p.numel() for m in mixers for p in m.out_proj.parameters()))
    assert counts == lors_spec_counts(6, 256, 2, 128, 64, 128, 16, terms, 8)
    # the literal values of lors_spec.md 3 (its T_private includes 6 LayerNorms of 512)
    assert counts == dict(A_shared=12_632_064, A_private=3_330_048, T_shared=8_388_608,
                          T_private=1_589_760 - 6 * 512)

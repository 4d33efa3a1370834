"""lors_det.utils.complexity against hand formulas. FLOPs = 2 x MACs; every matrix product
counts, including the products with per-query generated matrices (adaptive mixing, LORS)."""
import torch
import torch.nn as nn

from lors_det.models.layers import AdaptiveMixing
from lors_det.models.lors import (LORSAdaptiveMixing, SharedMixingWeights,
                                  plain_adamixer_model_cfg)
from lors_det.utils import count_flops, count_fn_flops, count_parameters

from _lors_helpers import (BATCH_SHAPE, C, DIM, G, KG, KS, NUM_CLASSES, NUM_QUERY, NUM_STAGES,
                           P_IN, P_OUT, RS, build, make_data_samples, make_inputs,
                           randomize_private_terms, spread_queries, tiny_lors_cfg)

HEADS, FFN = 4, 64  # tiny_lors_cfg's stage
BATCH = 2
Q = BATCH * NUM_QUERY  # query rows


def plain_mixing_flops(q, D, G, C, P_in, P_out):
    """AdaMixer mixing for q queries: generator, x @ M, S @ x, out projection."""
    return 2 * q * (D * G * (C * C + P_in * P_out) + G * P_in * C * C + G * P_out * P_in * C
                    + G * C * P_out * D)


def lors_mixing_flops(q, D, G, C, P_in, P_out, k, K):
    """LORS mixing of one stage in eval (merged out projection), sequential M residual
    ((x B) E) A and materialised S residual B (E A) or (B E) A."""
    return 2 * q * (D * G * (C * C + P_in * P_out)        # shared generator
                    + D * 2 * G * K * k * k               # core generators of M and S
                    + G * P_in * C * C                    # x @ M_c
                    + G * P_in * K * k * (2 * C + k)      # ((x B) E) A
                    + G * K * k * k * min(P_in, P_out)    # E A (or B E)
                    + G * P_out * K * k * P_in            # ... times the other factor
                    + G * P_out * P_in * C                # S @ x
                    + G * C * P_out * D)                  # merged out projection


def stage_rest_flops(q, n, b, D, heads, ffn, G, P_in, classes):
    """One AdaMixer stage without its mixer: attention (in/out projections, QK^T, AV), sampling
    offsets, FFN, one cls and one reg fc, fc_cls, fc_reg."""
    attn = 2 * q * D * 3 * D + 2 * 2 * b * n * n * D + 2 * q * D * D
    return (attn + 2 * q * D * G * P_in * 3 + 2 * 2 * q * D * ffn + 2 * 2 * q * D * D
            + 2 * q * D * classes + 2 * q * D * 4)


def test_adaptive_mixing_counts_the_dynamic_matmuls():
    D, G_, C_, P_in, P_out, q = 24, 3, 5, 6, 7, 11
    mixer = AdaptiveMixing(in_dim=G_ * C_, in_points=P_in, out_points=P_out, n_groups=G_,
                           query_dim=D)
    sampled, query = torch.randn(1, q, G_, P_in, C_), torch.randn(1, q, D)
    with torch.no_grad():
        flops, _ = count_fn_flops(mixer, sampled, query)
    dynamic = 2 * q * (G_ * P_in * C_ * C_ + G_ * P_out * P_in * C_)  # the two batched matmuls
    static = 2 * q * (D * G_ * (C_ * C_ + P_in * P_out) + G_ * C_ * P_out * D)
    assert flops == dynamic + static == plain_mixing_flops(q, D, G_, C_, P_in, P_out)


def test_lors_residual_strategy_costs_match_the_docstring():
    """LORSAdaptiveMixing / AdaptiveLowRankResidual.macs: per query, group and term at C=128,
    P_in=64, P_out=128, k=16, M sequential 278,528 vs materialised 294,912 MACs, S materialised
    147,456 vs sequential 425,984."""
    shared = SharedMixingWeights(256, 128, 2, 64, 128)
    mixer = LORSAdaptiveMixing(256, 64, 128, 2, 256, shared=shared)
    sampled, query = torch.randn(1, 2, 2, 64, 128), torch.randn(1, 2, 256)
    mixer.eval()
    flops = {}
    with torch.no_grad():
        mixer(sampled, query)  # merge the out projection once, outside the counts
        for channel in ('sequential', 'materialize'):
            for spatial in ('sequential', 'materialize'):
                mixer.channel_strategy, mixer.spatial_strategy = channel, spatial
                flops[channel, spatial], _ = count_fn_flops(mixer, sampled, query)
    per_term = 2 * 2 * 2  # FLOPs per MAC x queries x groups (one term)
    assert (flops['materialize', 'materialize'] - flops['sequential', 'materialize']
            == per_term * (294_912 - 278_528))
    assert (flops['sequential', 'sequential'] - flops['sequential', 'materialize']
            == per_term * (425_984 - 147_456))
    assert 278_528 == 64 * 16 * (2 * 128 + 16) and 294_912 == 128 * 16 * 16 + 128 * 16 * 128
    assert 147_456 == 16 * 16 * 64 + 128 * 16 * 64 and 425_984 == 128 * 16 * (64 + 16 + 128)
    assert flops['sequential', 'materialize'] == lors_mixing_flops(2, 256, 2, 128, 64, 128, 16, 1)


def _conv_flops(module, inputs):
    """2 * out_elements * C_in/groups * kh * kw for every Conv2d, from forward hooks."""
    total = [0]

    def hook(conv, _, out):
        total[0] += 2 * out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * \
            conv.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        out = module(inputs)
    for h in handles:
        h.remove()
    return total[0], out


def _decoder_flops(lors):
    rest = stage_rest_flops(Q, NUM_QUERY, BATCH, DIM, HEADS, FFN, G, P_IN, NUM_CLASSES)
    if lors:
        return sum(rest + lors_mixing_flops(Q, DIM, G, C, P_IN, P_OUT, k, K)
                   for k, K in zip(KS, KG))
    return NUM_STAGES * (rest + plain_mixing_flops(Q, DIM, G, C, P_IN, P_OUT))


def test_count_flops_by_part_on_tiny_models():
    inputs, samples = make_inputs(), make_data_samples()
    lors = build(tiny_lors_cfg())
    spread_queries(lors)
    randomize_private_terms(lors)
    plain = build(plain_adamixer_model_cfg(tiny_lors_cfg()))
    lors.train()
    for model, is_lors in ((lors, True), (plain, False)):
        backbone, feats = _conv_flops(model.backbone, inputs)
        neck = sum(2 * f.shape[-2] * f.shape[-1] * f.shape[1] * DIM * BATCH for f in feats)
        expected = dict(backbone=backbone, neck=neck, query_generator=0,
                        decoder=_decoder_flops(is_lors))
        expected['total'] = sum(expected.values())
        assert count_flops(model, inputs, samples) == expected
    # the LORS^T merge is done before counting (and cached): a second count is the same, and
    # the model's train/eval flags are restored
    assert lors.training and lors.roi_head.shared_mixing.training
    assert count_flops(lors, inputs, samples)['decoder'] == _decoder_flops(True)
    assert BATCH_SHAPE == (64, 96)  # the neck formula above assumes stride-divisible inputs


def test_count_parameters_shared_private_split():
    lors = build(tiny_lors_cfg(), init=False)
    counts = count_parameters(lors)
    gen_out = G * (C * C + P_IN * P_OUT)
    proj_in = G * C * P_OUT
    shared = DIM * gen_out + gen_out + DIM * proj_in
    private_lors = sum((DIM + 1) * 2 * G * K * k * k + G * K * k * (2 * C + P_OUT + P_IN)
                       + r * (proj_in + DIM) + DIM for k, K, r in zip(KS, KG, RS))
    stage_own = sum(p.numel() for s in lors.roi_head.bbox_head
                    for n, p in s.named_parameters() if '.adaptive_mixing.' not in n)
    assert counts['decoder_shared'] == shared
    assert counts['decoder_private'] == stage_own + private_lors
    assert counts['decoder'] == shared + stage_own + private_lors
    assert counts['total'] == sum(counts[k] for k in ('backbone', 'neck', 'query_generator',
                                                      'decoder'))
    assert counts['query_generator'] == NUM_QUERY * (4 + DIM)

    plain = build(plain_adamixer_model_cfg(tiny_lors_cfg()), init=False)
    plain_counts = count_parameters(plain)
    assert plain_counts['decoder_shared'] == 0
    assert plain_counts['decoder_private'] == plain_counts['decoder'] == stage_own + NUM_STAGES * (
        DIM * gen_out + gen_out + proj_in * DIM + DIM)

r"""Parameter counts of the shipped AdaMixer+LORS configs, derived from the architecture
(lors_spec.md section 3, adamixer_spec.md section 2.2), not read off the implementation.

Notation: D=256 (content dim), G=2 groups, C=256/G=128 channels per group, P_in=64, P_out=128,
H = G*C*P_out = 32768 (out-projection input), k=16 (LORS^A core), K=[1,1,2,2,3,3] (LORS^A
terms), r=8 (LORS^T rank), N=6 stages, 80 classes, FFN 2048, 8 heads.

Decoder, per stage outside the mixer (AdaMixer's stage; the mixer is the only LORS part):

    MHA 3*256*256 + 3*256 + 256*256 + 256              = 263,168
    attention_norm + ffn_norm + sampling_n_mixing.norm  = 3 * 512 = 1,536
    iof_tau                                             = 8
    sampling offsets 256*(G*P_in*3 = 384) + 384         = 98,688
    FFN 256*2048 + 2048 + 2048*256 + 256                = 1,050,880
    cls_fcs + reg_fcs 2 * (256*256 + 256 + 512)         = 132,608
    fc_cls 256*80 + 80, fc_reg 256*4 + 4                = 20,560 + 1,028
    stage rest                                          = 1,568,476

LORS mixing (shared: roi_head.shared_mixing; private: each stage's mixer):

    shared generator  256*G*(C^2 + P_in*P_out) + G*(C^2 + P_in*P_out)
                      = 256*49,152 + 49,152                                = 12,632,064
    private LORS^A    per unit of K: core generator (256+1)*2*G*k^2 = 263,168,
                      factors B, A of M and S G*k*(C + C + P_out + P_in) = 14,336,
                      sum K = 12: 12 * 277,504                             =  3,330,048
    shared out_proj   256*H (no bias)                                      =  8,388,608
    private LORS^T    N * (r*(H + 256) + 256 bias) = 6 * 264,448           =  1,586,688

Decoder = 6*1,568,476 + 12,632,064 + 3,330,048 + 8,388,608 + 1,586,688 = **35,348,264** (the
spec's grouping puts the 6 sampling LayerNorms with LORS^T: 1,589,760 + 6*1,567,964 gives the
same). Shared = 12,632,064 + 8,388,608 = 21,020,672; private = 14,327,592.

Rest of the model: ResNet-50 without fc 23,508,032 (torchvision's 25,557,032 minus the fc
2048*1000 + 1000); ChannelMapping neck (256+512+1024+2048)*256 + 4*256 + GroupNorm 2*256 =
984,576; query generator 100*(4 + 256) = 26,000. Total = 23,508,032 + 984,576 + 26,000 +
35,348,264 = **59,866,872** (paper: 35 M decoder, 60 M total).

300 queries add 200*(4 + 256) = 52,000; ResNet-101 adds 42,500,160 - 23,508,032 = 18,992,128.
The folded model (plain G=2/P_in=64 AdaMixer) has 6 * (1,568,476 + 12,632,064 + 256*H + 256) =
135,536,424 decoder parameters.
"""
import pytest

from lors_det.models.lors import plain_adamixer_model_cfg
from lors_det.utils import count_parameters

from _lors_helpers import build, load_cfg, offline

D, G, P_IN, P_OUT, K_SIZE, RANK, N = 256, 2, 64, 128, 16, 8, 6
C = D // G
H = G * C * P_OUT
KS = [1, 1, 2, 2, 3, 3]
NUM_CLASSES, FFN = 80, 2048

STAGE_REST = ((3 * D * D + 3 * D + D * D + D) + 3 * 2 * D + 8 + (D * G * P_IN * 3 + G * P_IN * 3)
              + (D * FFN + FFN + FFN * D + D) + 2 * (D * D + D + 2 * D)
              + (D * NUM_CLASSES + NUM_CLASSES) + (D * 4 + 4))
GEN_OUT = G * (C * C + P_IN * P_OUT)
SHARED_GEN = D * GEN_OUT + GEN_OUT
PRIVATE_A = sum(K * ((D + 1) * 2 * G * K_SIZE ** 2 + G * K_SIZE * (2 * C + P_OUT + P_IN))
                for K in KS)
SHARED_OUT = D * H
PRIVATE_T = N * (RANK * (H + D) + D)
DECODER = N * STAGE_REST + SHARED_GEN + PRIVATE_A + SHARED_OUT + PRIVATE_T

R50 = 25_557_032 - (2048 * 1000 + 1000)
NECK = (256 + 512 + 1024 + 2048) * D + 4 * D + 2 * D
QUERIES = 100 * (4 + D)
TOTAL = R50 + NECK + QUERIES + DECODER
R101_EXTRA = 42_500_160 - R50
FOLDED_DECODER = N * (STAGE_REST + SHARED_GEN + D * H + D)


def test_formulas_give_the_documented_integers():
    assert STAGE_REST == 1_568_476
    assert (SHARED_GEN, PRIVATE_A, SHARED_OUT, PRIVATE_T) == (12_632_064, 3_330_048, 8_388_608,
                                                              1_586_688)
    assert DECODER == 35_348_264
    assert (R50, NECK, QUERIES) == (23_508_032, 984_576, 26_000)
    assert TOTAL == 59_866_872
    assert FOLDED_DECODER == 135_536_424


@pytest.fixture(scope='module')
def r50_lors():
    return build(offline(load_cfg('lors/adamixer-lors_r50_8xb2-1x_coco.py').model), init=False)


def test_r50_lors_decoder_and_model_counts(r50_lors):
    counts = count_parameters(r50_lors)
    assert counts == dict(backbone=R50, neck=NECK, query_generator=QUERIES, decoder=DECODER,
                          total=TOTAL, decoder_shared=SHARED_GEN + SHARED_OUT,
                          decoder_private=N * STAGE_REST + PRIVATE_A + PRIVATE_T)
    assert sum(p.numel() for p in r50_lors.roi_head.parameters()) == 35_348_264
    assert sum(p.numel() for p in r50_lors.parameters()) == 59_866_872
    # by ownership: under roi_head.shared_mixing, and under roi_head.bbox_head.<i>
    assert sum(p.numel() for p in r50_lors.roi_head.shared_mixing.parameters()) == 21_020_672
    assert sum(p.numel() for p in r50_lors.roi_head.bbox_head.parameters()) == 14_327_592


def test_folded_plain_config_count():
    cfg = offline(load_cfg('lors/adamixer-lors_r50_8xb2-1x_coco.py').model)
    plain = build(plain_adamixer_model_cfg(cfg), init=False)
    counts = count_parameters(plain)
    assert counts['decoder'] == FOLDED_DECODER and counts['decoder_shared'] == 0
    assert counts['total'] == R50 + NECK + QUERIES + FOLDED_DECODER


@pytest.mark.parametrize('rel_path, expected', [
    ('adamixer_lors_r50_1x.py', TOTAL),
    ('lors/adamixer-lors_r50_8xb2-ms-480-800-3x_coco.py', TOTAL),
    ('lors/adamixer-lors_r50_8xb2-300q-crop-ms-480-800-3x_coco.py', TOTAL + 200 * (4 + D)),
    ('lors/adamixer-lors_r101_8xb2-ms-480-800-3x_coco.py', TOTAL + R101_EXTRA),
])
def test_other_lors_configs(rel_path, expected):
    counts = count_parameters(build(offline(load_cfg(rel_path).model), init=False))
    assert counts['total'] == expected
    assert counts['decoder'] == DECODER

"""The LORS configs change only the decoder of the AdaMixer config they build on, with the
released LORS settings; the short alias is the R-50 1x config; the digits demo has the decoder
size its formula gives."""
import copy

import pytest

from lors_det.utils import count_parameters

from _lors_helpers import build, load_cfg

PAIRS = {
    'lors/adamixer-lors_r50_8xb2-1x_coco.py': 'adamixer/adamixer_r50_8xb2-1x_coco.py',
    'lors/adamixer-lors_r50_8xb2-ms-480-800-3x_coco.py':
    'adamixer/adamixer_r50_8xb2-ms-480-800-3x_coco.py',
    'lors/adamixer-lors_r50_8xb2-300q-crop-ms-480-800-3x_coco.py':
    'adamixer/adamixer_r50_8xb2-300q-crop-ms-480-800-3x_coco.py',
    'lors/adamixer-lors_r101_8xb2-ms-480-800-3x_coco.py':
    'adamixer/adamixer_r101_8xb2-ms-480-800-3x_coco.py',
    'lors/adamixer-lors_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py':
    'adamixer/adamixer_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py',
}
# lors_spec.md section 2: the released famixer_r50_lors_* settings
RELEASED_LORS = dict(share_generator=True, share_out_proj=True, generator_rank=16,
                     generator_num_terms=[1, 1, 2, 2, 3, 3], out_proj_rank=8,
                     out_proj_zero_init='B')


@pytest.mark.parametrize('lors_path', sorted(PAIRS))
def test_lors_config_changes_only_the_decoder(lors_path):
    lors = load_cfg(lors_path).to_dict()
    plain = load_cfg(PAIRS[lors_path]).to_dict()
    lors.pop('lors_roi_head')
    lors_roi, plain_roi = lors['model'].pop('roi_head'), plain['model'].pop('roi_head')
    assert lors == plain  # backbone, neck, queries, data, schedule, runtime: unchanged

    assert lors_roi.pop('type') == 'AdaMixerLORSDecoder'
    assert lors_roi.pop('lors_cfg') == RELEASED_LORS
    stage = lors_roi['bbox_head']
    assert (stage.pop('n_groups'), stage.pop('in_points'), stage.pop('out_points')) == (2, 64,
                                                                                       128)
    plain_roi.pop('type')
    for key in ('n_groups', 'in_points', 'out_points'):
        plain_roi['bbox_head'].pop(key)
    assert lors_roi == plain_roi  # stage loss weights, heads, losses, ... as in AdaMixer


def test_alias_is_the_r50_1x_config():
    alias = load_cfg('adamixer_lors_r50_1x.py')
    assert alias.to_dict() == load_cfg('lors/adamixer-lors_r50_8xb2-1x_coco.py').to_dict()
    assert 'lors_det' in alias.custom_imports['imports']


def test_demo_lors_decoder_count():
    """Demo dims: D=128, G=2, C=64, P_in=32, P_out=32, H=G*C*P_out=4096, k=8, K=[1,1,2,2,3,3],
    r=8, 4 heads, FFN 512, 10 classes, 6 stages."""
    D, G, C, P_in, P_out, k, r, ffn, classes = 128, 2, 64, 32, 32, 8, 8, 512, 10
    Ks, H = [1, 1, 2, 2, 3, 3], 2 * 64 * 32
    rest = ((4 * D * D + 4 * D) + 3 * 2 * D + 4 + (D * G * P_in * 3 + G * P_in * 3)
            + (D * ffn + ffn + ffn * D + D) + 2 * (D * D + D + 2 * D) + (D * classes + classes)
            + (D * 4 + 4))
    gen_out = G * (C * C + P_in * P_out)
    lors = (6 * rest + D * gen_out + gen_out
            + sum(K * ((D + 1) * 2 * G * k * k + G * k * (2 * C + P_out + P_in)) for K in Ks)
            + D * H + 6 * (r * (H + D) + D))
    assert (rest, lors) == (258_642, 4_033_772)
    cfg = load_cfg('demo/adamixer-lors_tiny_1xb8-demo_digits.py')
    counts = count_parameters(build(copy.deepcopy(cfg.model), init=False))
    assert counts['decoder'] == lors
    assert counts['decoder_shared'] == D * gen_out + gen_out + D * H
    # the plain demo (G=4, P_in=16, C=32): 6 * (rest with 4*16*3 offsets + generator + out_proj)
    plain_gen = 4 * (32 * 32 + 16 * 32)
    plain = 6 * (rest + D * plain_gen + plain_gen + 4 * 32 * 32 * D + D)
    assert plain == 9_453_804
    plain_counts = count_parameters(build(load_cfg('demo/adamixer_tiny_1xb8-demo_digits.py')
                                          .model, init=False))
    assert plain_counts['decoder'] == plain

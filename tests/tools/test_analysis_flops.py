"""tools/analysis_tools/get_flops.py against hand formulas (FLOPs = 2 x MACs).

Per query and stage, with D the query dim, G groups of C channels, P_in / P_out points:
self-attention 2(3D^2 + D^2) + attention products 4 N D (per image: QK^T and AV over N queries),
sampling offsets 2 D (3 G P_in), mixing generator 2 D G (C^2 + P_in P_out), the adaptive products
ACM 2 G P_in C^2 and ASM 2 G P_out P_in C, out projection 2 G C P_out D, FFN 4 D F, heads
2 (2 D^2 + D K + 4 D). LORS changes the generator and the products (module docstring of
LORSAdaptiveMixingStack: M residual applied sequentially, S residual materialised).
The R-50 parameter numbers are the ones derived in shared/design/adamixer_spec.md section 2.2 and
tests/lors_adamixer/test_lors_r50_params.py (README: 134,790,904 / 35,348,264).
"""
import json
import os.path as osp

import pytest
import torch

from _analysis_helpers import TINY, load_tool
from _tools_helpers import REPO, run_tool, write_tiny_config

get_flops = load_tool('get_flops')

ROLES = ('attention', 'sampling_offsets', 'mixing_generator', 'mixing_products',
         'mixing_out_proj', 'ffn', 'heads')


def plain_stage_flops(B, N, D, heads, ffn, G, C, P_in, P_out, classes):
    """FLOPs of one AdaMixer stage by role, for B images of N queries (Q = B N rows)."""
    Q = B * N
    return dict(
        attention=2 * Q * (3 * D * D + D * D) + 2 * 2 * B * N * N * D,
        sampling_offsets=2 * Q * D * G * P_in * 3,
        mixing_generator=2 * Q * D * G * (C * C + P_in * P_out),
        mixing_products=2 * Q * (G * P_in * C * C + G * P_out * P_in * C),
        mixing_out_proj=2 * Q * G * C * P_out * D,
        ffn=2 * Q * 2 * D * ffn,
        heads=2 * Q * (2 * D * D + D * classes + D * 4))


def lors_stage_flops(B, N, D, heads, ffn, G, C, P_in, P_out, classes, k, K):
    """One AdaMixer+LORS stage with K terms of k x k cores (eval: merged out projection)."""
    Q = B * N
    flops = plain_stage_flops(B, N, D, heads, ffn, G, C, P_in, P_out, classes)
    flops['mixing_generator'] = 2 * Q * D * (G * (C * C + P_in * P_out) + 2 * G * K * k * k)
    flops['mixing_products'] = 2 * Q * G * (
        P_in * C * C                       # x @ M_shared
        + K * P_in * k * (2 * C + k)       # ((x ml) E) mr
        + K * k * k * min(P_in, P_out)     # the per-query core times the smaller factor
        + K * P_out * k * P_in             # ... times the other factor
        + P_out * P_in * C)                # S @ x
    return flops


def plain_stage_params(D, heads, ffn, G, C, P_in, P_out, classes):
    return ((3 * D * D + 3 * D + D * D + D) + 3 * 2 * D + heads
            + (D * G * P_in * 3 + G * P_in * 3) + (D + 1) * G * (C * C + P_in * P_out)
            + (G * C * P_out * D + D) + (D * ffn + ffn + ffn * D + D)
            + 2 * (D * D + D + 2 * D) + (D * classes + classes) + (D * 4 + 4))


def summed(stages):
    return {role: sum(s[role] for s in stages) for role in ROLES}


def tiny_args(B):
    t = TINY
    return (B, t['queries'], t['D'], t['heads'], t['ffn'], t['G'], t['feat'] // t['G'],
            t['P_in'], t['P_out'], t['classes'])


@pytest.fixture(scope='module')
def tiny_cfg_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('flops')
    return write_tiny_config(str(tmp / 'tiny.py'), str(tmp / 'data') + '/')


def test_tiny_adamixer_flops_and_params_by_part(tiny_cfg_path, tmp_path, capsys):
    out = tmp_path / 'flops.json'
    report = get_flops.main([tiny_cfg_path, '--shape', '64', '80', '--batch-size', '2',
                             '--out-json', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    B = 2
    stage = plain_stage_flops(*tiny_args(B))
    roles = report['decoder_flops_by_role']
    assert {r: roles[r] for r in ROLES} == summed([stage] * TINY['stages'])
    assert roles['other'] == 0
    assert report['decoder_flops_by_stage'] == [sum(stage.values())] * TINY['stages']
    flops = report['flops']
    assert flops['decoder'] == TINY['stages'] * sum(stage.values())
    # the dynamic products are what module-hook counters miss: here 2 x 5 x 4 x (4 x 8 x 8 +
    # 6 x 4 x 8) = 35,840 FLOPs per stage
    assert stage['mixing_products'] == 2 * 10 * 4 * (4 * 8 * 8 + 6 * 4 * 8) == 35_840
    # the input went through the data preprocessor: 64 x 80 padded to 64 x 96 (divisor 32), so
    # the 1x1 neck convs see 16x24, 8x12, 4x6, 2x3 maps of 8, 16, 32, 64 channels
    assert report['input_shape'] == [2, 3, 64, 80] and report['padded_shape'] == [64, 96]
    assert flops['neck'] == 2 * B * TINY['D'] * (16 * 24 * 8 + 8 * 12 * 16 + 4 * 6 * 32
                                                  + 2 * 3 * 64)
    assert flops['query_generator'] == 0  # embeddings only
    assert flops['total'] == sum(flops[k] for k in ('backbone', 'neck', 'query_generator',
                                                    'decoder'))
    assert report['macs'] == {k: v // 2 for k, v in flops.items()}

    params = report['params']
    t = TINY
    assert params['decoder'] == t['stages'] * plain_stage_params(
        t['D'], t['heads'], t['ffn'], t['G'], t['feat'] // t['G'], t['P_in'], t['P_out'],
        t['classes'])
    assert params['query_generator'] == t['queries'] * (4 + t['D'])
    assert params['decoder_shared'] == 0
    assert params['decoder_private'] == params['decoder']
    assert params['total'] == sum(params[k] for k in ('backbone', 'neck', 'query_generator',
                                                      'decoder'))
    # no frozen backbone stage in the tiny config: only the detached initial boxes are frozen
    assert report['trainable_params'] == params['total'] - t['queries'] * 4
    printed = capsys.readouterr().out
    assert f'{params["total"]:,}' in printed and f'{params["decoder"]:,}' in printed
    assert 'input: 2 x 3 x 64 x 80 (padded to 64 x 96), 5 queries' in printed


def test_tiny_lors_decoder_flops_by_role(tiny_cfg_path, tmp_path):
    ks, kg, rs = [2, 3], [1, 2], [2, 3]
    lors_path = tmp_path / 'tiny_lors.py'
    lors_path.write_text(f"""_base_ = [{tiny_cfg_path!r}]
model = dict(roi_head=dict(
    type='AdaMixerLORSDecoder',
    bbox_head=dict(n_groups=2),
    lors_cfg=dict(generator_rank={ks}, generator_num_terms={kg}, out_proj_rank={rs},
                  out_proj_zero_init='B', channel_residual='sequential',
                  spatial_residual='materialize')))
""")
    cfg = get_flops.load_config(str(lors_path))
    report = get_flops.analyze(cfg, (64, 64), batch_size=1)
    t = TINY
    G, C = 2, t['feat'] // 2
    args = (1, t['queries'], t['D'], t['heads'], t['ffn'], G, C, t['P_in'], t['P_out'],
            t['classes'])
    stages = [lors_stage_flops(*args, k, K) for k, K in zip(ks, kg)]
    roles = report['decoder_flops_by_role']
    assert {r: roles[r] for r in ROLES} == summed(stages)
    assert roles['other'] == 0
    assert report['decoder_flops_by_stage'] == [sum(s.values()) for s in stages]
    assert report['flops']['decoder'] == sum(sum(s.values()) for s in stages)

    params = report['params']
    D, P_in, P_out = t['D'], t['P_in'], t['P_out']
    gen_out, proj_in = G * (C * C + P_in * P_out), G * C * P_out
    # shared: the generator (with bias) and the out-projection weight (no bias)
    assert params['decoder_shared'] == D * gen_out + gen_out + proj_in * D
    assert params['decoder_shared'] + params['decoder_private'] == params['decoder']


def test_checkpoint_must_fit_and_shape_is_checked(tiny_cfg_path, tmp_path):
    cfg = get_flops.load_config(tiny_cfg_path)
    model = get_flops.build_detector(cfg)
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': model.state_dict()}, good)
    with_ckpt = get_flops.analyze(cfg, (64, 64), checkpoint=str(good))
    assert with_ckpt['params'] == get_flops.analyze(cfg, (64, 64))['params']
    bad = tmp_path / 'bad.pth'
    state = model.state_dict()
    state.pop('rpn_head.init_proposal_bboxes.weight')
    torch.save({'state_dict': state}, bad)
    with pytest.raises(RuntimeError, match='init_proposal_bboxes'):
        get_flops.analyze(cfg, (64, 64), checkpoint=str(bad))
    with pytest.raises(SystemExit):
        get_flops.parse_args([tiny_cfg_path, '--shape', '1', '2', '3'])
    with pytest.raises(FileNotFoundError, match='no_such.py'):
        get_flops.load_config(str(tmp_path / 'no_such.py'))


R50_PLAIN = dict(backbone=23_508_032, neck=984_576, query_generator=26_000,
                 decoder=110_272_296, total=134_790_904, decoder_shared=0,
                 decoder_private=110_272_296)
R50_LORS = dict(backbone=23_508_032, neck=984_576, query_generator=26_000,
                decoder=35_348_264, total=59_866_872, decoder_shared=21_020_672,
                decoder_private=14_327_592)


def test_shipped_r50_configs(tmp_path):
    """The command line on the shipped configs (a small image: the parameter counts and the
    decoder FLOPs do not depend on the image size; sampling is not a matrix product)."""
    out = tmp_path / 'r50.json'
    proc = run_tool(['tools/analysis_tools/get_flops.py',
                     'configs/adamixer/adamixer_r50_8xb2-1x_coco.py', '--shape', '64',
                     '--out-json', str(out)])
    report = json.loads(out.read_text())
    assert report['params'] == R50_PLAIN
    assert '134,790,904' in proc.stdout and '110,272,296' in proc.stdout
    stage = plain_stage_flops(1, 100, 256, 8, 2048, 4, 64, 32, 128, 80)
    assert report['decoder_flops_by_role'] == dict(summed([stage] * 6), other=0)
    # 19,962,880 MACs per query and stage: shared/design/lors_spec.md 6.1 gives 11.98 GMACs
    assert report['macs']['decoder'] == 600 * 19_962_880 == 11_977_728_000
    assert report['flops']['neck'] == 2 * 256 * (256 * 16 * 16 + 512 * 8 * 8 + 1024 * 4 * 4
                                                 + 2048 * 2 * 2)

    cfg = get_flops.load_config(osp.join(REPO, 'configs/lors/adamixer-lors_r50_8xb2-1x_coco.py'))
    lors = get_flops.analyze(cfg, (64, 64))
    assert lors['params'] == R50_LORS
    stages = [lors_stage_flops(1, 100, 256, 8, 2048, 2, 128, 64, 128, 80, 16, K)
              for K in (1, 1, 2, 2, 3, 3)]
    assert lors['decoder_flops_by_role'] == dict(summed(stages), other=0)
    assert lors['decoder_flops_by_stage'] == [sum(s.values()) for s in stages]

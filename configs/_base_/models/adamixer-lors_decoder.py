# LORS (CVPR 2024) on the AdaMixer decoder, as a delta for any AdaMixer config:
#
#   _base_ = ['<an AdaMixer config>', '../_base_/models/adamixer-lors_decoder.py']
#   model = dict(roi_head={{_base_.lors_roi_head}})
#
# Released LORS code (li-jl16/LORS, famixer_r50_lors_*; lors_spec.md sections 2-3):
# * the mixer runs with G=2 groups and P_in=64 sampled points (AdaMixer: G=4, P_in=32); the
#   spatial output stays P_out=128, so the out-projection input stays 2*128*128 = 32768;
# * shared across the stages (roi_head.shared_mixing): the mixing-parameter generator
#   Linear(256 -> 2*(128^2 + 64*128)) (LORS^A) and the out-projection weight 32768 -> 256
#   (LORS^T);
# * private per stage (roi_head.bbox_head.<i>.sampling_n_mixing.adaptive_mixing): K_i LORS^A
#   terms with k x k cores (k=16, K=1,1,2,2,3,3), a rank-8 LORS^T residual with B
#   zero-initialised, the out-projection bias; and, as in AdaMixer, attention, sampling offsets,
#   FFN, norms and heads.
lors_roi_head = dict(
    type='AdaMixerLORSDecoder',
    bbox_head=dict(n_groups=2, in_points=64, out_points=128),
    lors_cfg=dict(
        share_generator=True,
        share_out_proj=True,
        generator_rank=16,
        generator_num_terms=[1, 1, 2, 2, 3, 3],
        out_proj_rank=8,
        out_proj_zero_init='B'))

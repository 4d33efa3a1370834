# AdaMixer + LORS decoder on the embedded digits data (the demo of
# adamixer_tiny_1xb8-demo_digits.py with the LORS decoder), trained from scratch on CPU.
# LORS scaled like the demo: G=2 (C=64 channels per group), P_in=32, P_out=32 (the plain demo:
# G=4, P_in=16), LORS^A core k=8 (= C/8 as in the COCO config's 16 = 128/8), K=1,1,2,2,3,3,
# LORS^T rank 8. Decoder: 4,033,772 parameters (plain demo: 9,453,804);
# tests/lors_adamixer/test_lors_configs.py derives both.
_base_ = './adamixer_tiny_1xb8-demo_digits.py'
model = dict(
    roi_head=dict(
        type='AdaMixerLORSDecoder',
        bbox_head=dict(n_groups=2, in_points=32, out_points=32),
        lors_cfg=dict(
            generator_rank=8,
            generator_num_terms=[1, 1, 2, 2, 3, 3],
            out_proj_rank=8,
            out_proj_zero_init='B')))

# LORS paper Table 6 (LORS^A core size k and terms K per stage; LORS^T rank 8): k=32,
# K=[1, 1, 2, 2, 3, 3]. Decoder 44,994,344 parameters.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(
    roi_head=dict(lors_cfg=dict(generator_rank=32, generator_num_terms=[1, 1, 2, 2, 3, 3])))

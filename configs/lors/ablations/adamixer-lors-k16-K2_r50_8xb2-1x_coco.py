# LORS paper Table 6 (LORS^A core size k and terms K per stage; LORS^T rank 8): k=16,
# K=[2] * 6. Decoder 35,348,264 parameters.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(roi_head=dict(lors_cfg=dict(generator_rank=16, generator_num_terms=[2] * 6)))

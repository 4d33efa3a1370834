# LORS paper Table 7 (LORS^T rank r of the out-projection; LORS^A as released): r=32.
# Decoder 40,103,720 parameters.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(roi_head=dict(lors_cfg=dict(out_proj_rank=32)))

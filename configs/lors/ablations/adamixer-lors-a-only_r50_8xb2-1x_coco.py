# LORS paper Table 4, "LORS^A only": the stages share the mixing generator (LORS^A) and each
# keeps its own dense out-projection (no LORS^T). Decoder 75,706,152 parameters.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(roi_head=dict(lors_cfg=dict(share_out_proj=False)))

# LORS paper Table 4, "LORS^T only": the stages share the out-projection weight (LORS^T) and
# each keeps its own dense mixing generator (no LORS^A). Decoder 95,178,536 parameters at the
# released G=2 / P_in=64 (the paper's 66 M needs other, unstated dims: lors_spec.md 5.3).
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(roi_head=dict(lors_cfg=dict(share_generator=False)))

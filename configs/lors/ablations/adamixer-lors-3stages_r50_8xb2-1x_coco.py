# LORS paper Table 8 (number of decoder stages): 3 stages, LORS^A terms K=[1, 2, 3] (the
# paper does not list its K schedule for this row). Decoder 28,184,468 parameters.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
num_stages = 3
model = dict(
    roi_head=dict(
        num_stages=num_stages,
        stage_loss_weights=[1] * num_stages,
        lors_cfg=dict(generator_num_terms=[1, 2, 3])))

# AdaMixer R-101, 100 queries, 3x multi-scale 480-800 (official adamixer_r101_mstrain_480-800_3x).
_base_ = './adamixer_r50_8xb2-ms-480-800-3x_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

# AdaMixer R-101, 300 queries, 3x with crop + multi-scale. Official README: 48.0 AP val2017.
_base_ = './adamixer_r50_8xb2-300q-crop-ms-480-800-3x_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

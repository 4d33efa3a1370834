# AdaMixer on the embedded digits data (128x128 images, 10 classes), trained from scratch on
# CPU in minutes: the README's main job (`bash tools/demo.sh`).
# Same detector as the COCO configs (6 stages, ACM/ASM, Hungarian matching, focal/L1/GIoU),
# scaled down: ResNet-18 with 16 base channels (C2..C5 = 16/32/64/128 channels), 128-d
# queries, 16 queries per image (at most 6 digits), 16 sampling points in 4 groups.
_base_ = [
    '../_base_/models/adamixer_r50.py',
    '../_base_/datasets/digits_detection.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/demo_digits_parts.py',
]
num_stages = 6
num_query = 16
num_classes = 10
content_dim = 128
feat_levels = [16, 32, 64, 128]

model = dict(
    backbone=dict(
        depth=18,
        base_channels=16,
        frozen_stages=-1,
        norm_eval=False,
        zero_init_residual=False,
        init_cfg=None),  # from scratch: no pretrained weights on this machine
    neck=dict(in_channels=feat_levels, out_channels=content_dim),
    rpn_head=dict(num_query=num_query, content_dim=content_dim),
    roi_head=dict(
        content_dim=content_dim,
        bbox_head=dict(
            num_classes=num_classes,
            num_heads=4,
            feedforward_channels=512,
            content_dim=content_dim,
            feat_channels=content_dim,
            in_points=16,
            out_points=32,
            n_groups=4)),
    test_cfg=dict(rcnn=dict(max_per_img=num_query)))

train_cfg = {{_base_.demo_train_cfg}}
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = {{_base_.demo_param_scheduler}}
optim_wrapper = {{_base_.demo_optim_wrapper}}
auto_scale_lr = {{_base_.demo_auto_scale_lr}}
default_hooks = {{_base_.demo_default_hooks}}
randomness = {{_base_.demo_randomness}}

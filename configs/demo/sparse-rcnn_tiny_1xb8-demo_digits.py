# mmdet's own Sparse R-CNN on the embedded digits data, trained from scratch on CPU with the
# AdaMixer demo's backbone, data and schedule (the no-LORS reference of
# sparse-rcnn-lors_tiny_1xb8-demo_digits.py). Scaled down like the AdaMixer demo: ResNet-18
# with 16 base channels, FPN and proposal features of 128 channels, 32 proposals, 6 DIIHead
# stages with 4 heads, FFN 512, DynamicConv 128 -> 32 -> 128 on 7x7 RoIs.
_base_ = [
    'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py',
    '../_base_/datasets/digits_detection_parts.py',
    '../_base_/schedules/demo_digits_parts.py',
]
num_stages = 6
num_proposals = 32
num_classes = 10
dim = 128
feat_levels = [16, 32, 64, 128]

model = dict(
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),  # from scratch: no pretrained weights on this machine
    neck=dict(in_channels=feat_levels, out_channels=dim),
    rpn_head=dict(num_proposals=num_proposals, proposal_feature_channel=dim),
    roi_head=dict(
        proposal_feature_channel=dim,
        bbox_roi_extractor=dict(out_channels=dim),
        bbox_head=[
            dict(
                type='DIIHead',
                num_classes=num_classes,
                num_ffn_fcs=2,
                num_heads=4,
                num_cls_fcs=1,
                num_reg_fcs=3,
                feedforward_channels=512,
                in_channels=dim,
                dropout=0.0,
                ffn_act_cfg=dict(type='ReLU', inplace=True),
                dynamic_conv_cfg=dict(
                    type='DynamicConv',
                    in_channels=dim,
                    feat_channels=32,
                    out_channels=dim,
                    input_feat_shape=7,
                    act_cfg=dict(type='ReLU', inplace=True),
                    norm_cfg=dict(type='LN')),
                loss_bbox=dict(type='L1Loss', loss_weight=5.0),
                loss_iou=dict(type='GIoULoss', loss_weight=2.0),
                loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                              loss_weight=2.0),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', clip_border=False,
                                target_means=[0., 0., 0., 0.], target_stds=[0.5, 0.5, 1., 1.]))
            for _ in range(num_stages)
        ]),
    test_cfg=dict(rcnn=dict(max_per_img=num_proposals)))

train_dataloader = {{_base_.digits_train_dataloader}}
val_dataloader = {{_base_.digits_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.digits_val_evaluator}}
test_evaluator = val_evaluator

train_cfg = {{_base_.demo_train_cfg}}
param_scheduler = {{_base_.demo_param_scheduler}}
optim_wrapper = {{_base_.demo_optim_wrapper}}
auto_scale_lr = {{_base_.demo_auto_scale_lr}}
default_hooks = {{_base_.demo_default_hooks}}
randomness = {{_base_.demo_randomness}}
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)

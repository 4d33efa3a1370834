# AdaMixer R-50, 100 queries, 6 decoder stages, COCO (80 classes).
# Official reference: MCG-NJU/AdaMixer configs/adamixer/adamixer_r50_1x_coco.py.
# custom_imports (the lors_det plugin) lives in default_runtime.py.

num_stages = 6
num_query = 100
num_classes = 80
content_dim = 256

model = dict(
    type='AdaMixer',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='ChannelMapping',
        in_channels=[256, 512, 1024, 2048],
        out_channels=content_dim,
        num_outs=4),
    rpn_head=dict(type='InitialQueryGenerator', num_query=num_query, content_dim=content_dim),
    roi_head=dict(
        type='AdaMixerDecoder',
        num_stages=num_stages,
        stage_loss_weights=[1] * num_stages,
        content_dim=content_dim,
        featmap_strides=[4, 8, 16, 32],
        # one stage config, replicated num_stages times by the decoder (override it as a dict;
        # a list with one config per stage also works)
        bbox_head=dict(
            type='AdaMixerDecoderStage',
            num_classes=num_classes,
            num_ffn_fcs=2,
            num_heads=8,
            num_cls_fcs=1,
            num_reg_fcs=1,
            feedforward_channels=2048,
            content_dim=content_dim,
            feat_channels=content_dim,
            dropout=0.0,
            in_points=32,
            out_points=128,
            n_groups=4,
            mixing_cfg=dict(type='AdaptiveMixing'),
            ffn_act_cfg=dict(type='ReLU', inplace=True),
            loss_bbox=dict(type='L1Loss', loss_weight=5.0),
            loss_iou=dict(type='GIoULoss', loss_weight=2.0),
            loss_cls=dict(
                type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
            # placeholder: boxes are refined in xyzr, no coder is used
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                clip_border=False,
                target_means=[0., 0., 0., 0.],
                target_stds=[0.5, 0.5, 1., 1.]))),
    # training and testing settings
    train_cfg=dict(
        rpn=None,
        # one Hungarian assigner config, replicated for every stage (or a list, one per stage)
        rcnn=dict(
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='FocalLossCost', weight=2.0),
                    dict(type='BBoxL1Cost', weight=5.0, box_format='xyxy'),
                    dict(type='IoUCost', iou_mode='giou', weight=2.0)
                ]),
            sampler=dict(type='PseudoSampler'),
            pos_weight=1)),
    test_cfg=dict(rpn=None, rcnn=dict(max_per_img=num_query)))

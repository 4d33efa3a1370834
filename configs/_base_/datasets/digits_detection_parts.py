# The parts of the embedded demo data config, under digits_* names, so that a config can take
# them next to a stock mmdet base (a config sets train_dataloader = {{_base_.digits_train_dataloader}}:
# every key of the stock COCO loaders is overwritten).
# digits_detection.py gives them their usual names.
#
# Embedded demo data: handwritten digits (scikit-learn) pasted on 128x128 backgrounds,
# 10 classes '0'..'9', 1200 train / 200 val images. Generated on first use into
# data/digits_det/ by DigitsDetDataset (or ahead of time: python tools/make_demo_data.py).
digits_dataset_type = 'DigitsDetDataset'
digits_data_root = 'data/digits_det/'
# One generator_cfg for both splits: the dataset regenerates when its arguments change.
digits_generator_cfg = dict(num_train=1200, num_val=200, img_size=(128, 128), seed=0)
digits_img_scale = (128, 128)
digits_backend_args = None

digits_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=digits_backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=digits_img_scale, keep_ratio=True),
    # no RandomFlip: digits are not mirror-symmetric (a mirrored 2 or 5 is not a digit of
    # its class, and the val split has none)
    dict(type='PackDetInputs')
]
digits_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=digits_backend_args),
    dict(type='Resize', scale=digits_img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# Workers cost more than they save on a 2-core machine: decoding a 128 px PNG is far
# cheaper than a training step. With num_workers > 0 set persistent_workers=True.
digits_train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=digits_dataset_type,
        data_root=digits_data_root,
        generator_cfg=digits_generator_cfg,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=digits_train_pipeline,
        backend_args=digits_backend_args))
digits_val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=digits_dataset_type,
        data_root=digits_data_root,
        generator_cfg=digits_generator_cfg,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=digits_test_pipeline,
        backend_args=digits_backend_args))

digits_val_evaluator = dict(
    type='CheckedCocoMetric',
    ann_file=digits_data_root + 'annotations/instances_val.json',
    metric='bbox',
    classwise=False,
    format_only=False,
    backend_args=digits_backend_args)

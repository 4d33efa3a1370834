# COCO 2017 detection, AdaMixer 3x 300-query "DETR augmentation": flip, then with equal
# chance either the 480-800 multi-scale resize, or resize to short side {400, 500, 600},
# an absolute-range crop of 384-600 px and the 480-800 multi-scale resize.
# Test pipeline unchanged (1333, 800).
_base_ = './coco_detection.py'

min_values = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
ms_resize = dict(
    type='RandomChoiceResize',
    scales=[(1333, value) for value in min_values],
    keep_ratio=True)
resize_crop_resize = [
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 400), (1333, 500), (1333, 600)],
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=(384, 600),
        allow_negative_crop=True),
    ms_resize,
]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[[ms_resize], resize_crop_resize]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

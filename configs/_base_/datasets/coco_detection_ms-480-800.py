# COCO 2017 detection, AdaMixer 3x (100 queries) pipeline: short side drawn from
# {480, 512, ..., 800} (long side <= 1333) + flip. Test pipeline unchanged (1333, 800).
_base_ = './coco_detection.py'

min_values = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, value) for value in min_values],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

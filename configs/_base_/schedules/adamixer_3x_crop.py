# AdaMixer 3x with 300 queries + crop augmentation: 36 epochs, lr x0.1 after epochs 24, 33.
_base_ = './adamixer_3x.py'

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end={{_base_.max_epochs}},
        by_epoch=True,
        milestones=[24, 33],
        gamma=0.1)
]

# AdaMixer 1x: 12 epochs, AdamW 2.5e-5 (total batch 16), grad clip 1, 500-iter linear
# warmup, lr x0.1 after epochs 8 and 11.
max_epochs = 12
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2.5e-5, weight_decay=1e-4),
    clip_grad=dict(max_norm=1, norm_type=2))

# lr above is for 16 images per iteration (8 GPUs x 2); `--auto-scale-lr` rescales it
# linearly to the actual total batch size. Keep both keys (tools/train.py needs them).
auto_scale_lr = dict(enable=False, base_batch_size=16)

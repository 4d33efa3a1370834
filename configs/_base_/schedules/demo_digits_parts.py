# The demo schedule and runtime (12 epochs of the 1200 digits images at batch 8 = 1800
# iterations, from scratch) under demo_* names, so that a config can take them next to a stock
# mmdet base: `train_cfg = {{_base_.demo_train_cfg}}` etc. (every key of the stock values is
# overwritten; the param_scheduler list is replaced).
demo_max_epochs = 12
demo_train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=demo_max_epochs, val_interval=1)
demo_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', T_max=demo_max_epochs, eta_min=1e-5, by_epoch=True,
         begin=0, end=demo_max_epochs, convert_to_iter_based=True)
]
demo_optim_wrapper = dict(
    type='OptimWrapper',
    # fused: one kernel for all 269 tensors (5 ms instead of 17 ms per step on 2 CPU cores)
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4, fused=True),
    clip_grad=dict(max_norm=1, norm_type=2))
demo_auto_scale_lr = dict(enable=False, base_batch_size=8)
demo_default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='AtomicCheckpointHook', interval=demo_max_epochs, max_keep_ckpts=1))
demo_randomness = dict(seed=0)

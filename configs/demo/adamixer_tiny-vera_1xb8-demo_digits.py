# VeRA on the demo detector: the ResNet-18 (16 base channels) trained by the plain demo is frozen
# and adapted by VeRA on all 19 convs of layer1-4 (trainable: sum of (d_out + r) = 2,400), while
# a fresh neck and decoder train on the digits data. Run the plain demo first, then this one:
#   bash tools/demo.sh      # writes work_dirs/adamixer_tiny_1xb8-demo_digits/epoch_12.pth
#   bash tools/demo.sh configs/demo/adamixer_tiny-vera_1xb8-demo_digits.py
# (or point pretrained_backbone below at another checkpoint of the plain demo detector).
_base_ = './adamixer_tiny_1xb8-demo_digits.py'
pretrained_backbone = 'work_dirs/adamixer_tiny_1xb8-demo_digits/epoch_12.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        module=dict(
            type='ResNet',
            depth=18,
            base_channels=16,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=-1,  # PEFTBackbone freezes the base itself
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=True,  # keep the pretrained BN statistics
            style='pytorch',
            init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone, prefix='backbone.')),
        adapter=dict(
            type='VeRA',
            targets=[r'layer[1-4]\.\d+\.(conv[12]|downsample\.0)'],
            rank=64,  # one frozen pair A (64 x 1152), B (128 x 64) for all 19 convs
            d_initial=0.1,
            projection_prng_key=0,
            save_projection=True)))

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'vera_lambda': dict(decay_mult=0.)}))
custom_hooks = [dict(type='AdapterCheckpointHook')]

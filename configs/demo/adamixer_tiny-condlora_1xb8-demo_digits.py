# CondLoRA on the demo detector: the ResNet-18 (16 base channels) trained by the plain demo is
# frozen and adapted by CondLoRA on all 19 convs of layer1-4, one θ pair per (stage, role, shape)
# group (14 groups, trainable: sum of r (d_out + d_in k^2) = 50,944), while a fresh neck and
# decoder train on the digits data. Run the plain demo first, then this one:
#   bash tools/demo.sh      # writes work_dirs/adamixer_tiny_1xb8-demo_digits/epoch_12.pth
#   bash tools/demo.sh configs/demo/adamixer_tiny-condlora_1xb8-demo_digits.py
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
            type='CondLoRA',
            targets=[r'layer[1-4]\.\d+\.(conv[12]|downsample\.0)'],
            rank=8,
            alpha=8,
            group_by='role_shape')))

custom_hooks = [dict(type='AdapterCheckpointHook')]

# AdaMixer R-50, 1x, with a frozen backbone adapted by CondLoRA: the base weights stay frozen and
# only the adapter trains in the backbone; neck and decoder train as in the base config.
# Trainable backbone parameters: 207,872 = sum over 15 groups of r (d_out + d_in k^2), whatever
# the depth. Inference at no extra cost: tools/model_converters/adapter_ckpt.py merge (folds ΔW
# into W0).
_base_ = '../adamixer/adamixer_r50_8xb2-1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        # the base config's ResNet-50 as is (torchvision weights, frozen_stages=1): the stem and
        # layer1 stay frozen as in full fine-tuning; the adapters go on the 42 convs of layer2-4
        module={{_base_.model.backbone}},
        adapter=dict(
            type='CondLoRA',
            targets=[r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)'],
            rank=8,
            alpha=8,
            group_by='role_shape')))  # 15 groups (stage, role, shape), one θ pair each

# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

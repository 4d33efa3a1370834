# CondLoRA on the 42 convs of layer2-4 of a ResNet-50 wrapped by PEFTBackbone (the stem and
# layer1 stay frozen, as in full fine-tuning with frozen_stages=1). Trainable backbone
# parameters: 207,872 = sum over 15 (stage, role, shape) groups of r (d_out + d_in k^2),
# whatever the depth. Use with:
#   model = dict(backbone=dict(_delete_=True, type='PEFTBackbone',
#                              module={{_base_.model.backbone}}, adapter={{_base_.peft_adapter}}))
peft_adapter = dict(
    type='CondLoRA',
    targets=[r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)'],
    rank=8,
    alpha=8,
    group_by='role_shape')  # 15 groups (stage, role, shape), one θ pair each

# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

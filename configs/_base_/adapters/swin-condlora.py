# CondLoRA on qkv, proj, fc1 and fc2 of all 24 blocks of a Swin-S (96 Linear layers) wrapped by
# PEFTBackbone. Trainable backbone parameters: 184,320 = sum over 16 groups of r (d_out + d_in),
# as for Swin-T. Use with:
#   model = dict(backbone=dict(_delete_=True, type='PEFTBackbone',
#                              module={{_base_.model.backbone}}, adapter={{_base_.peft_adapter}}))
peft_adapter = dict(
    type='CondLoRA',
    targets=[
        r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)',
        r'stages\.\d+\.blocks\.\d+\.ffn\.layers\.(0\.0|1)',  # fc1, fc2
    ],
    rank=8,
    alpha=8,
    group_by='role_shape')  # 16 groups (stage x qkv/proj/fc1/fc2)

# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

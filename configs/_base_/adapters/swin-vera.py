# VeRA on qkv, proj, fc1 and fc2 of all 24 blocks of a Swin-S (96 Linear layers) wrapped by
# PEFTBackbone. Trainable backbone parameters: 105,792 = sum over the 96 layers of (d_out + r).
# Use with:
#   model = dict(backbone=dict(_delete_=True, type='PEFTBackbone',
#                              module={{_base_.model.backbone}}, adapter={{_base_.peft_adapter}}))
peft_adapter = dict(
    type='VeRA',
    targets=[
        r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)',
        r'stages\.\d+\.blocks\.\d+\.ffn\.layers\.(0\.0|1)',  # fc1, fc2
    ],
    rank=256,  # one frozen pair A (256 x 3072), B (3072 x 256) for all 96 layers
    d_initial=0.1,
    projection_prng_key=0,
    save_projection=True)

# λ_b / λ_d are scales: no weight decay on them (the learning rate is the base one, untuned);
# the config adds them to its optimiser (a fragment cannot extend another base's optim_wrapper):
#   optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.peft_custom_keys}}))
peft_custom_keys = {'vera_lambda': dict(decay_mult=0.)}
# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

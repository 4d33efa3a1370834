# VeRA on the 42 convs of layer2-4 of a ResNet-50 wrapped by PEFTBackbone (the stem and layer1
# stay frozen, as in full fine-tuning with frozen_stages=1). Trainable backbone parameters:
# 35,840 = sum over the 42 convs of (d_out + r). Use with:
#   model = dict(backbone=dict(_delete_=True, type='PEFTBackbone',
#                              module={{_base_.model.backbone}}, adapter={{_base_.peft_adapter}}))
peft_adapter = dict(
    type='VeRA',
    targets=[r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)'],
    rank=256,  # one frozen pair A (256 x 4608), B (2048 x 256) for all 42 layers
    d_initial=0.1,
    projection_prng_key=0,
    save_projection=True)

# λ_b / λ_d are scales: no weight decay on them (the learning rate is the base one, untuned);
# the config adds them to its optimiser (a fragment cannot extend another base's optim_wrapper):
#   optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.peft_custom_keys}}))
peft_custom_keys = {'vera_lambda': dict(decay_mult=0.)}
# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

# AdaMixer Swin-S, 300 queries, 3x crop + multi-scale 480-800, with a frozen backbone adapted by
# VeRA: the base weights stay frozen and only the adapter trains in the backbone; neck and
# decoder train as in the base config. Trainable backbone parameters: 105,792 = sum over the 96
# Linear layers of (d_out + r). Inference at no extra cost:
# tools/model_converters/adapter_ckpt.py merge (folds ΔW into W0).
_base_ = '../adamixer/adamixer_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        # the base config's Swin-S as is (ImageNet-1k weights, no frozen stages); the adapters go
        # on qkv, proj, fc1 and fc2 of all 24 blocks (96 Linear layers)
        module={{_base_.model.backbone}},
        adapter=dict(
            type='VeRA',
            targets=[
                r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)',
                r'stages\.\d+\.blocks\.\d+\.ffn\.layers\.(0\.0|1)',  # fc1, fc2
            ],
            rank=256,  # one frozen pair A (256 x 3072), B (3072 x 256) for all 96 layers
            d_initial=0.1,
            projection_prng_key=0,
            save_projection=True)))

# λ_b / λ_d are scales: no weight decay on them (the learning rate is the base one, untuned)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'vera_lambda': dict(decay_mult=0.)}))
# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

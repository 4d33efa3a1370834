# AdaMixer + LORS decoder, Swin-S, 300 queries, 3x crop + multi-scale 480-800, with a frozen
# backbone adapted by CondLoRA: the base weights stay frozen and only the adapter trains in the
# backbone; neck and decoder train as in the base config. Trainable backbone parameters: 184,320
# = sum over 16 groups of r (d_out + d_in), as for Swin-T. Inference at no extra cost:
# tools/model_converters/adapter_ckpt.py merge (folds ΔW into W0).
_base_ = '../lors/adamixer-lors_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        # the base config's Swin-S as is (ImageNet-1k weights, no frozen stages); the adapters go
        # on qkv, proj, fc1 and fc2 of all 24 blocks (96 Linear layers)
        module={{_base_.model.backbone}},
        adapter=dict(
            type='CondLoRA',
            targets=[
                r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)',
                r'stages\.\d+\.blocks\.\d+\.ffn\.layers\.(0\.0|1)',  # fc1, fc2
            ],
            rank=8,
            alpha=8,
            group_by='role_shape')))  # 16 groups (stage x qkv/proj/fc1/fc2)

# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

# AdaMixer + LORS decoder, R-50, 3x multi-scale 480-800, with a frozen backbone adapted by VeRA:
# the base weights stay frozen and only the adapter trains in the backbone; neck and decoder
# train as in the base config. Trainable backbone parameters: 35,840 = sum over the 42 convs of
# (d_out + r). Inference at no extra cost: tools/model_converters/adapter_ckpt.py merge (folds ΔW
# into W0).
_base_ = '../lors/adamixer-lors_r50_8xb2-ms-480-800-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        # the base config's ResNet-50 as is (torchvision weights, frozen_stages=1): the stem and
        # layer1 stay frozen as in full fine-tuning; the adapters go on the 42 convs of layer2-4
        module={{_base_.model.backbone}},
        adapter=dict(
            type='VeRA',
            targets=[r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)'],
            rank=256,  # one frozen pair A (256 x 4608), B (2048 x 256) for all 42 layers
            d_initial=0.1,
            projection_prng_key=0,
            save_projection=True)))

# λ_b / λ_d are scales: no weight decay on them (the learning rate is the base one, untuned)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'vera_lambda': dict(decay_mult=0.)}))
# epoch_N_adapter.pth (all but the frozen backbone weights) beside every epoch_N.pth
custom_hooks = [dict(type='AdapterCheckpointHook')]

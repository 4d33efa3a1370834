# AdaMixer + LORS decoder, R-50, 1x, with a frozen backbone adapted by VeRA: the base weights
# stay frozen and only the adapter trains in the backbone; neck and decoder train as in the base
# config. Trainable backbone parameters: 35,840 = sum over the 42 convs of (d_out + r). Inference
# at no extra cost: tools/model_converters/adapter_ckpt.py merge (folds ΔW into W0).
_base_ = [
    '../lors/adamixer-lors_r50_8xb2-1x_coco.py',
    '../_base_/adapters/resnet-vera.py',
]
# the base config's backbone as is, wrapped; the adapter and its hooks come from the fragment
model = dict(
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        module={{_base_.model.backbone}},
        adapter={{_base_.peft_adapter}}))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.peft_custom_keys}}))

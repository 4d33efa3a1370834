# mmdet's own DINO on the embedded digits data, trained from scratch on CPU with the
# AdaMixer demo's backbone, data and schedule (the no-LORS reference of
# dino-4scale-lors_tiny_1xb8-demo_digits.py). Scaled down: ResNet-18 with 16 base channels
# (C3..C5 = 32/64/128) mapped to 4 levels of 256 channels, 6 encoder and 6 decoder layers of
# width 256 (8 heads, FFN 512), 32 queries. The width stays 256: mmdet 3.3's DINO decoder
# encodes reference points with 128 features per coordinate whatever the width. DINO's recipe where it differs from the
# AdaMixer demo: grad clip 0.1 (its lr x0.1 on the backbone is for pretrained backbones).
_base_ = [
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    '../_base_/datasets/digits_detection_parts.py',
    '../_base_/schedules/demo_digits_parts.py',
]
dim = 256
num_queries = 32

model = dict(
    num_queries=num_queries,
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False,
                  norm_cfg=dict(type='BN', requires_grad=True),
                  init_cfg=None),  # from scratch: no pretrained weights on this machine
    neck=dict(in_channels=[32, 64, 128], out_channels=dim),
    encoder=dict(layer_cfg=dict(self_attn_cfg=dict(embed_dims=dim),
                                ffn_cfg=dict(embed_dims=dim, feedforward_channels=512))),
    decoder=dict(layer_cfg=dict(self_attn_cfg=dict(embed_dims=dim),
                                cross_attn_cfg=dict(embed_dims=dim),
                                ffn_cfg=dict(embed_dims=dim, feedforward_channels=512))),
    positional_encoding=dict(num_feats=dim // 2),
    bbox_head=dict(num_classes=10, embed_dims=dim),
    test_cfg=dict(max_per_img=num_queries))

train_dataloader = {{_base_.digits_train_dataloader}}
val_dataloader = {{_base_.digits_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.digits_val_evaluator}}
test_evaluator = val_evaluator

train_cfg = {{_base_.demo_train_cfg}}
param_scheduler = {{_base_.demo_param_scheduler}}
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4, fused=True),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=None)
auto_scale_lr = {{_base_.demo_auto_scale_lr}}
default_hooks = {{_base_.demo_default_hooks}}
randomness = {{_base_.demo_randomness}}
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)

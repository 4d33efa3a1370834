# LORS on mmdet's own Deformable DETR (R-50, 300 queries, 50 epochs): the 6 decoder layers of
# decoder.layers share their Linear layers and keep rank-8 private residuals (LORS^T):
# the deformable cross-attention's sampling_offsets (256 -> 256), attention_weights
# (256 -> 128), value_proj and output_proj (256 -> 256), and the FFN (256 -> 1024 -> 256).
# The self-attention (nn.MultiheadAttention reads its projections as weights) and the norms
# stay per layer; the encoder is untouched (add a stack with container='encoder.layers' to
# share it too). Stock init for the shared layers (zero sampling-offset weights with the
# direction-grid bias), zero residual at init.
_base_ = ['mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py', '../_base_/lors/detr-decoder-lors.py']

model = dict(type='LORSSharing', detector_type='DeformableDETR',
             stacks={{_base_.detr_decoder_lors_stacks}})

# lors_det runtime: the plugin, crash-safe checkpoints, mid-epoch resume, checked COCO metric
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
train_cfg = dict(type='ResumableEpochBasedTrainLoop')
val_evaluator = dict(type='CheckedCocoMetric')
test_evaluator = val_evaluator

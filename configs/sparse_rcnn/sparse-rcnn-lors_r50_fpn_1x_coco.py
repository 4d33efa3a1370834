# LORS on mmdet's own Sparse R-CNN (R-50, FPN, 100 proposals, 1x): the 6 DIIHead stages of
# roi_head.bbox_head share their large layers and keep low-rank private residuals.
# * LORS^A on DynamicConv's parameter generator `instance_interactive_conv.dynamic_layer`,
#   Linear(256 -> 256*64 + 64*256), which generates per-proposal matrices exactly like
#   AdaMixer's mixing generator: rank-16 cores, 1,1,2,2,3,3 terms per stage (the LORS
#   paper's AdaMixer setting);
# * LORS^T, rank 8, on the Linear layers of DynamicConv's output projection (12544 -> 256),
#   the FFN (256 -> 2048 -> 256) and the cls / reg branches (256 -> 256).
# Attention (nn.MultiheadAttention reads its projections as weights), norms and the final
# fc_cls / fc_reg stay per stage. Stock init for the shared layers, zero residual at init.
_base_ = 'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py'

num_stages = 6
lors_stacks = [
    dict(
        container='roi_head.bbox_head',
        adaptive=dict(
            targets=[r'instance_interactive_conv\.dynamic_layer'],
            blocks=[(256, 64), (64, 256)],  # DynamicConv's param_in, param_out
            rank=16,
            num_terms=[1, 1, 2, 2, 3, 3]),
        static=dict(
            targets=[r'instance_interactive_conv\.fc_layer', r'ffn\.layers\.(0\.0|1)',
                     r'(cls|reg)_fcs\.\d+'],
            rank=8))
]
model = dict(type='LORSSharing', detector_type='SparseRCNN', stacks=lors_stacks)

# lors_det runtime: the plugin, crash-safe checkpoints, mid-epoch resume, checked COCO metric
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
train_cfg = dict(type='ResumableEpochBasedTrainLoop')
val_evaluator = dict(type='CheckedCocoMetric')
test_evaluator = val_evaluator

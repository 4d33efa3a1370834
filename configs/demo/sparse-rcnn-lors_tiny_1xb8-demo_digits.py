# LORS on the Sparse R-CNN demo (sparse-rcnn_tiny_1xb8-demo_digits.py, same data and
# schedule): the COCO config's sharing (sparse_rcnn/sparse-rcnn-lors_r50_fpn_1x_coco.py) at
# the demo's widths: LORS^A on DynamicConv's generator (blocks 128 x 32 and 32 x 128; cores
# k=8 = 32/4 as the COCO config's 16 = 64/4; K=1,1,2,2,3,3), LORS^T rank 8.
_base_ = './sparse-rcnn_tiny_1xb8-demo_digits.py'
lors_stacks = [
    dict(
        container='roi_head.bbox_head',
        adaptive=dict(
            targets=[r'instance_interactive_conv\.dynamic_layer'],
            blocks=[(128, 32), (32, 128)],
            rank=8,
            num_terms=[1, 1, 2, 2, 3, 3]),
        static=dict(
            targets=[r'instance_interactive_conv\.fc_layer', r'ffn\.layers\.(0\.0|1)',
                     r'(cls|reg)_fcs\.\d+'],
            rank=8))
]
model = dict(type='LORSSharing', detector_type='SparseRCNN', stacks=lors_stacks)

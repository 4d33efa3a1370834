# AdaMixer R-50, 300 queries, 3x (lr steps at 24/33), multi-scale + DETR-style crop augmentation.
# Official README: 47.0 AP on COCO val2017, 47.2 on test-dev.
_base_ = [
    '../_base_/models/adamixer_r50.py',
    '../_base_/datasets/coco_detection_300q-crop-ms-480-800.py',
    '../_base_/schedules/adamixer_3x_crop.py',
    '../_base_/default_runtime.py',
]
num_query = 300
model = dict(
    rpn_head=dict(num_query=num_query),
    test_cfg=dict(rcnn=dict(max_per_img=num_query)))

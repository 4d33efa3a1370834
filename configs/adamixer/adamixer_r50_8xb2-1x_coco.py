# AdaMixer R-50, 100 queries, 1x (12 epochs), single scale 1333x800, 8 GPUs x 2 images.
# Paper / official README: 42.7 AP on COCO val2017 (official reproduction 42.6).
_base_ = [
    '../_base_/models/adamixer_r50.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/adamixer_1x.py',
    '../_base_/default_runtime.py',
]

# AdaMixer R-50, 100 queries, 3x (36 epochs, lr steps at 27/33), multi-scale 480-800 training.
_base_ = [
    '../_base_/models/adamixer_r50.py',
    '../_base_/datasets/coco_detection_ms-480-800.py',
    '../_base_/schedules/adamixer_3x.py',
    '../_base_/default_runtime.py',
]

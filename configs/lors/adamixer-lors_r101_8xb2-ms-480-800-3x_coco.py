# AdaMixer + LORS decoder, R-101, 100 queries, 3x, multi-scale 480-800 training.
_base_ = [
    '../adamixer/adamixer_r101_8xb2-ms-480-800-3x_coco.py',
    '../_base_/models/adamixer-lors_decoder.py',
]
model = dict(roi_head={{_base_.lors_roi_head}})

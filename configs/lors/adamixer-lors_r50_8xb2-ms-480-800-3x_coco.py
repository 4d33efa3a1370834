# AdaMixer + LORS decoder, R-50, 100 queries, 3x (36 epochs), multi-scale 480-800 training.
_base_ = [
    '../adamixer/adamixer_r50_8xb2-ms-480-800-3x_coco.py',
    '../_base_/models/adamixer-lors_decoder.py',
]
model = dict(roi_head={{_base_.lors_roi_head}})

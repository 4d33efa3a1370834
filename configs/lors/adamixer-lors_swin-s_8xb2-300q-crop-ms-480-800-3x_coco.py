# AdaMixer + LORS decoder, Swin-S, 300 queries, 3x with crop + multi-scale. The Swin-S weights
# are read from a local file: see the AdaMixer Swin-S config this one builds on.
_base_ = [
    '../adamixer/adamixer_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py',
    '../_base_/models/adamixer-lors_decoder.py',
]
model = dict(roi_head={{_base_.lors_roi_head}})

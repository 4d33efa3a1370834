# AdaMixer + LORS decoder, R-50, 300 queries, 3x, multi-scale + DETR-style crop augmentation.
# The decoder does not depend on the number of queries: 35,348,264 parameters as with 100.
_base_ = [
    '../adamixer/adamixer_r50_8xb2-300q-crop-ms-480-800-3x_coco.py',
    '../_base_/models/adamixer-lors_decoder.py',
]
model = dict(roi_head={{_base_.lors_roi_head}})

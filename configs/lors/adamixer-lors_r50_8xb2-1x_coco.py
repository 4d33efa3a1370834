# AdaMixer + LORS decoder, R-50, 100 queries, 1x (12 epochs), 8 GPUs x 2 images.
# Parameters (tests/lors_adamixer/test_lors_r50_params.py): decoder 35,348,264 (AdaMixer:
# 110,272,296), whole model 59,866,872 (AdaMixer: 134,790,904); paper: 35 M / 60 M.
# Training schedule and data: those of the AdaMixer config (AdamW 2.5e-5, steps at 8 and 11).
_base_ = [
    '../adamixer/adamixer_r50_8xb2-1x_coco.py',
    '../_base_/models/adamixer-lors_decoder.py',
]
model = dict(roi_head={{_base_.lors_roi_head}})

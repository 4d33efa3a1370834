# LORS on the DINO demo (dino-4scale_tiny_1xb8-demo_digits.py, same data and
# schedule): the COCO config's sharing (dino/dino-4scale-lors_r50_8xb2-12e_coco.py)
# at the demo's width: decoder cross-attention and FFN Linears shared, rank-8 residuals.
_base_ = ['./dino-4scale_tiny_1xb8-demo_digits.py', '../_base_/lors/detr-decoder-lors.py']
model = dict(type='LORSSharing', detector_type='DINO',
             stacks={{_base_.detr_decoder_lors_stacks}})

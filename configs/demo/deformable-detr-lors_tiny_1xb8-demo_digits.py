# LORS on the Deformable DETR demo (deformable-detr_tiny_1xb8-demo_digits.py, same data and
# schedule): the COCO config's sharing (deformable_detr/deformable-detr-lors_r50_16xb2-50e_coco.py)
# at the demo's width: decoder cross-attention and FFN Linears shared, rank-8 residuals.
_base_ = ['./deformable-detr_tiny_1xb8-demo_digits.py', '../_base_/lors/detr-decoder-lors.py']
model = dict(type='LORSSharing', detector_type='DeformableDETR',
             stacks={{_base_.detr_decoder_lors_stacks}})

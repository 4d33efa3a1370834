# Embedded demo data: handwritten digits (scikit-learn) pasted on 128x128 backgrounds,
# 10 classes '0'..'9', 1200 train / 200 val images (see digits_detection_parts.py).
_base_ = './digits_detection_parts.py'
train_dataloader = {{_base_.digits_train_dataloader}}
val_dataloader = {{_base_.digits_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.digits_val_evaluator}}
test_evaluator = val_evaluator

# Short name for the AdaMixer + LORS R-50 1x COCO config:
#   python tools/train.py configs/adamixer_lors_r50_1x.py
# (work dir: work_dirs/adamixer_lors_r50_1x). Everything is defined in the full config below.
_base_ = './lors/adamixer-lors_r50_8xb2-1x_coco.py'

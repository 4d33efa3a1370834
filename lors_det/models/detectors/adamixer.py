"""AdaMixer detector: backbone -> ChannelMapping neck -> InitialQueryGenerator -> AdaMixerDecoder.

A thin ``SparseRCNN`` subclass: mmdet's two-stage flow already is AdaMixer's
(``loss``: ``rpn_head.loss_and_predict`` then ``roi_head.loss``; ``predict``: ``rpn_head.predict``
then ``roi_head.predict``). ``model.train_cfg`` needs ``rpn=None`` and ``rcnn=[per-stage dicts]``,
``model.test_cfg`` needs ``rpn=None`` and ``rcnn=dict(max_per_img=...)``.
"""
from mmdet.models.detectors import SparseRCNN
from mmdet.registry import MODELS


@MODELS.register_module()
class AdaMixer(SparseRCNN):
    """AdaMixer (CVPR 2022), a query-based detector with adaptive sampling and mixing."""

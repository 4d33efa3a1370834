"""AdaMixer's ``InitialQueryGenerator``: learnable initial query boxes and contents.

It takes the place of the rpn_head of mmdet's ``SparseRCNN``/``TwoStageDetector`` and returns, per
image, an ``InstanceData`` with N entries:

* ``bboxes``: [N, 4] absolute xyxy boxes in the resized, unpadded image (detached);
* ``xyzr``: [N, 4] the same boxes as AdaMixer positional vectors (detached: not learnable);
* ``features``: [N, D] the content embedding after a non-affine LayerNorm;
* ``imgs_whwh``: [N, 4] ``(w, h, w, h)`` of ``img_shape``.

The box embedding only feeds detached tensors, so it never receives a gradient. It is made
``requires_grad=False`` so that DDP does not wait for its gradient: distributed training works
without ``find_unused_parameters = True`` (the official config's work-around, which costs a graph
traversal every iteration). Optimisation is unchanged: AdamW skips parameters without a gradient
either way, and the tensor stays in the state dict (official checkpoints load key for key).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..layers import bbox_xyxy_to_xyzr


@MODELS.register_module()
class InitialQueryGenerator(BaseModule):
    """Initial queries of AdaMixer.

    Args:
        num_query: number of queries N.
        content_dim: query content dimension D.
        **kwargs: ``train_cfg``, ``test_cfg`` and ``num_classes`` passed in by mmdet's
            ``TwoStageDetector``; they are not used.
    """

    def __init__(self, num_query: int = 100, content_dim: int = 256, init_cfg=None, **kwargs):
        super().__init__(init_cfg=init_cfg)
        self.num_query = num_query
        self.content_dim = content_dim
        # normalised cxcywh boxes
        self.init_proposal_bboxes = nn.Embedding(num_query, 4)
        self.init_proposal_bboxes.weight.requires_grad_(False)  # detached: see module docstring
        self.init_content_features = nn.Embedding(num_query, content_dim)

    def init_weights(self) -> None:
        super().init_weights()
        # every query starts as the whole image; the content keeps nn.Embedding's N(0, 1)
        with torch.no_grad():
            self.init_proposal_bboxes.weight[:, :2] = 0.5
            self.init_proposal_bboxes.weight[:, 2:] = 1.0

    def _decode_init_queries(self, batch_data_samples: SampleList) -> List[InstanceData]:
        weight = self.init_proposal_bboxes.weight
        whwh = []
        for data_sample in batch_data_samples:
            img_h, img_w = data_sample.metainfo['img_shape'][:2]
            whwh.append([img_w, img_h, img_w, img_h])
        imgs_whwh = weight.new_tensor(whwh)[:, None, :]  # [B, 1, 4]

        bboxes = bbox_cxcywh_to_xyxy(weight)[None] * imgs_whwh
        bboxes = bboxes.detach()
        xyzr = bbox_xyxy_to_xyzr(bboxes)
        content = F.layer_norm(self.init_content_features.weight, (self.content_dim, ))

        results_list = []
        for idx in range(len(batch_data_samples)):
            results = InstanceData()
            results.bboxes = bboxes[idx]
            results.xyzr = xyzr[idx]
            results.features = content
            results.imgs_whwh = imgs_whwh[idx].expand(self.num_query, 4)
            results_list.append(results)
        return results_list

    def loss(self, *args, **kwargs) -> dict:
        raise NotImplementedError('InitialQueryGenerator has no loss of its own; '
                                  'use loss_and_predict')

    def loss_and_predict(self,
                         x: Tuple[Tensor],
                         batch_data_samples: SampleList,
                         proposal_cfg: Optional[dict] = None,
                         **kwargs) -> Tuple[dict, List[InstanceData]]:
        """No loss on the initial queries; returns ``({}, results_list)``."""
        return dict(), self._decode_init_queries(batch_data_samples)

    def predict(self, x: Tuple[Tensor], batch_data_samples: SampleList,
                **kwargs) -> List[InstanceData]:
        return self._decode_init_queries(batch_data_samples)

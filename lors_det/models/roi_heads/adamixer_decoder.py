"""AdaMixer decoder: a cascade of ``AdaMixerDecoderStage`` heads refining query boxes in xyzr.

Stage loop (train and test): ``cls, delta, content = stage(x, xyzr, content)``, then
``xyzr = refine_xyzr(xyzr, delta)`` and ``boxes = decode(xyzr)``. In training the xyzr handed to
the next stage is detached (the content is not), and every stage gets its own Hungarian matching
and loss (keys ``s{i}.loss_cls / loss_bbox / loss_iou / pos_acc``). Inference uses the last stage
only: top-k over all sigmoid scores (sorted), label = index % num_classes, no NMS; boxes are
clipped to the image (the network input, and the original image when rescaled).

The queries come from ``InitialQueryGenerator`` (``xyzr``, ``features``, ``imgs_whwh`` per image).
"""
import copy
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.roi_heads import SparseRoIHead
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.structures import InstanceData
from torch import Tensor

from ..layers import bbox_xyxy_to_xyzr, refine_xyzr, xyzr_to_bbox_xyxy
from ..layers.precision import full_precision
from ..task_modules import hungarian_assign_batch


def clip_to_image(bboxes: Tensor, img_meta: dict, shape_key: str) -> Tensor:
    """``bboxes`` (x1, y1, x2, y2) clamped to the image ``img_meta[shape_key]`` = (h, w), as
    mmdet's DETR-style heads do; unchanged when the meta has no such shape."""
    shape = img_meta.get(shape_key)
    if shape is None:
        return bboxes
    height, width = shape[:2]
    bounds = bboxes.new_tensor([width, height, width, height])
    return torch.minimum(bboxes.clamp(min=0), bounds)


@MODELS.register_module()
class AdaMixerDecoder(SparseRoIHead):
    """AdaMixer decoder.

    Args:
        num_stages: number of decoder stages.
        stage_loss_weights: loss weight of every stage (length ``num_stages``).
        content_dim: query content dimension.
        featmap_strides: strides of the neck outputs used for 3D sampling.
        bbox_head: one ``AdaMixerDecoderStage`` config, or a list with one per stage.
        bbox_roi_extractor: only present because ``CascadeRoIHead`` requires one; it is never
            called. Defaults to a parameter-free ``SingleRoIExtractor``.
        train_cfg: one dict (used by every stage) or a list of per-stage dicts with ``assigner``, ``sampler`` (PseudoSampler) and
            ``pos_weight``.
        test_cfg: dict with ``max_per_img``.
        compile_cfg: None (eager) or the keyword arguments of ``torch.compile`` (``dict()`` for
            its defaults) with which every stage is compiled on first use. The compiled stage
            shares the stage's parameters; outputs equal eager ones to float rounding
            (tests/models/test_compiled_stages.py).
    """

    def __init__(self,
                 num_stages: int = 6,
                 stage_loss_weights: Sequence[float] = (1, 1, 1, 1, 1, 1),
                 content_dim: int = 256,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32),
                 bbox_head=dict(type='AdaMixerDecoderStage'),
                 bbox_roi_extractor=None,
                 train_cfg=None,
                 test_cfg=None,
                 init_cfg=None,
                 compile_cfg: Optional[dict] = None) -> None:
        # mmengine runs a parent's init_cfg before the children's init_weights, but a decoder
        # init_cfg would still be a second, competing init; the stages own their init.
        if init_cfg is not None:
            raise ValueError(f'AdaMixerDecoder must not have an init_cfg, got {init_cfg}')
        if len(stage_loss_weights) != num_stages:
            raise ValueError(f'stage_loss_weights has {len(stage_loss_weights)} entries but '
                             f'num_stages={num_stages}')
        if isinstance(bbox_head, (list, tuple)) and len(bbox_head) != num_stages:
            raise ValueError(f'bbox_head has {len(bbox_head)} stage configs but '
                             f'num_stages={num_stages}')
        if isinstance(train_cfg, dict):  # one stage config for all stages
            train_cfg = [copy.deepcopy(train_cfg) for _ in range(num_stages)]
        if train_cfg is not None and len(train_cfg) != num_stages:
            raise ValueError(f'train_cfg (model.train_cfg.rcnn) has {len(train_cfg)} stage '
                             f'configs but num_stages={num_stages}')
        if bbox_roi_extractor is None:
            bbox_roi_extractor = dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2),
                out_channels=content_dim,
                featmap_strides=list(featmap_strides))
        if compile_cfg is not None and not isinstance(compile_cfg, dict):
            raise ValueError(f'roi_head.compile_cfg must be None or a dict of torch.compile '
                             f'arguments, got {compile_cfg!r}')
        self.content_dim = content_dim
        self.featmap_strides = list(featmap_strides)
        self.compile_cfg = compile_cfg
        self._compiled_stages = {}  # not state: rebuilt on first use after a copy
        super().__init__(
            num_stages=num_stages,
            stage_loss_weights=list(stage_loss_weights),
            proposal_feature_channel=content_dim,
            bbox_roi_extractor=bbox_roi_extractor,
            bbox_head=list(bbox_head) if isinstance(bbox_head, tuple) else bbox_head,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            init_cfg=None)

    @staticmethod
    def _stack_queries(rpn_results_list: List[InstanceData]) -> Tuple[Tensor, Tensor, Tensor]:
        """Batch the initial queries: xyzr [B, N, 4], content [B, N, D], imgs_whwh [B, N, 4]."""
        xyzr = []
        for res in rpn_results_list:
            if 'xyzr' in res:
                xyzr.append(res.xyzr)
            else:  # e.g. proposals from another generator: derive the positions from the boxes
                xyzr.append(bbox_xyxy_to_xyzr(res.bboxes).detach())
        content = torch.stack([res.features for res in rpn_results_list])
        imgs_whwh = torch.stack([res.imgs_whwh for res in rpn_results_list])
        return torch.stack(xyzr), content, imgs_whwh

    def _stage(self, stage: int):
        """Stage ``stage``, compiled on first use when ``compile_cfg`` is set."""
        if self.compile_cfg is None:
            return self.bbox_head[stage]
        if stage not in self._compiled_stages:
            self._compiled_stages[stage] = torch.compile(self.bbox_head[stage],
                                                         **self.compile_cfg)
        return self._compiled_stages[stage]

    def __getstate__(self):
        state = dict(super().__getstate__())
        state['_compiled_stages'] = {}  # compiled wrappers are neither copied nor pickled
        return state

    def _bbox_forward(self, stage: int, x: Tuple[Tensor], xyzr: Tensor, content: Tensor) -> dict:
        cls_score, delta, content = self._stage(stage)(x, xyzr, content, self.featmap_strides)
        xyzr = refine_xyzr(xyzr, delta)
        bboxes = xyzr_to_bbox_xyxy(xyzr)
        return dict(cls_score=cls_score, xyzr=xyzr, decoded_bboxes=bboxes, object_feats=content)

    def _stage_loss(self, stage: int, bbox_results: dict, imgs_whwh: Tensor,
                    batch_img_metas: List[dict], batch_gt_instances: List[InstanceData]) -> dict:
        # losses and matching in float32 under mixed precision (focal loss' log-sigmoid and
        # GIoU's divisions lose too much in bf16/fp16)
        cls_score = full_precision(bbox_results['cls_score'])
        bboxes = full_precision(bbox_results['decoded_bboxes'])
        with torch.autocast(cls_score.device.type, enabled=False):
            return self._matched_losses(stage, cls_score, bboxes, full_precision(imgs_whwh),
                                        batch_img_metas, batch_gt_instances)

    def _matched_losses(self, stage: int, cls_score: Tensor, bboxes: Tensor, imgs_whwh: Tensor,
                        batch_img_metas: List[dict],
                        batch_gt_instances: List[InstanceData]) -> dict:
        pred_instances = [
            InstanceData(bboxes=bboxes[i].detach(), scores=cls_score[i].detach(),
                         priors=bboxes[i].detach()) for i in range(len(batch_img_metas))]
        assign_results = hungarian_assign_batch(self.bbox_assigner[stage], pred_instances,
                                                batch_gt_instances, batch_img_metas)
        sampling_results = [
            self.bbox_sampler[stage].sample(assign_result, preds, gts)
            for assign_result, preds, gts in zip(assign_results, pred_instances,
                                                 batch_gt_instances)]
        loss_and_target = self.bbox_head[stage].loss_and_target(
            cls_score.flatten(0, 1),
            bboxes.flatten(0, 1),
            sampling_results,
            self.train_cfg[stage],
            imgs_whwh=imgs_whwh,
            concat=True)
        return loss_and_target['loss_bbox']

    def loss(self, x: Tuple[Tensor], rpn_results_list: List[InstanceData],
             batch_data_samples: SampleList) -> dict:
        batch_gt_instances, _, batch_img_metas = unpack_gt_instances(batch_data_samples)
        xyzr, content, imgs_whwh = self._stack_queries(rpn_results_list)
        losses = {}
        for stage in range(self.num_stages):
            bbox_results = self._bbox_forward(stage, x, xyzr, content)
            stage_losses = self._stage_loss(stage, bbox_results, imgs_whwh, batch_img_metas,
                                            batch_gt_instances)
            weight = self.stage_loss_weights[stage]
            for name, value in stage_losses.items():
                losses[f's{stage}.{name}'] = value * weight if 'loss' in name else value
            # boxes only get gradients from their own stage's loss
            xyzr = bbox_results['xyzr'].detach()
            content = bbox_results['object_feats']
        return losses

    def _run_stages(self, x: Tuple[Tensor], rpn_results_list: List[InstanceData]) -> List[dict]:
        xyzr, content, _ = self._stack_queries(rpn_results_list)
        all_results = []
        for stage in range(self.num_stages):
            bbox_results = self._bbox_forward(stage, x, xyzr, content)
            all_results.append(bbox_results)
            xyzr = bbox_results['xyzr']
            content = bbox_results['object_feats']
        return all_results

    def predict_bbox(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     rpn_results_list: List[InstanceData],
                     rcnn_test_cfg,
                     rescale: bool = False) -> List[InstanceData]:
        last = self._run_stages(x, rpn_results_list)[-1]
        head = self.bbox_head[-1]
        if head.loss_cls.use_sigmoid:
            scores = last['cls_score'].sigmoid()
        else:
            scores = last['cls_score'].softmax(-1)[..., :-1]
        num_classes = scores.size(-1)
        results_list = []
        for img_id, img_meta in enumerate(batch_img_metas):
            flat_scores = scores[img_id].flatten()
            k = min(rcnn_test_cfg['max_per_img'], flat_scores.numel())
            top_scores, top_inds = flat_scores.topk(k, sorted=True)
            bboxes = clip_to_image(last['decoded_bboxes'][img_id][top_inds // num_classes],
                                   img_meta, 'img_shape')
            if rescale:
                if img_meta.get('scale_factor') is None:
                    raise KeyError('rescale=True needs img_meta["scale_factor"]')
                bboxes = bboxes / bboxes.new_tensor(img_meta['scale_factor']).repeat(2)
                # dividing by the rounded resize factor can overshoot the original image
                bboxes = clip_to_image(bboxes, img_meta, 'ori_shape')
            results_list.append(
                InstanceData(bboxes=bboxes, scores=top_scores, labels=top_inds % num_classes))
        return results_list

    def forward(self, x: Tuple[Tensor], rpn_results_list: List[InstanceData],
                batch_data_samples: SampleList = None) -> tuple:
        """Tensor mode: ``(cls_score, decoded_bboxes)`` of every stage."""
        return tuple((res['cls_score'], res['decoded_bboxes'])
                     for res in self._run_stages(x, rpn_results_list))

"""Hungarian matching of a whole batch with one cost computation.

mmdet's ``HungarianAssigner.assign`` works on one image: three small cost matrices, a stack, a
device copy and scipy, i.e. ~40 tiny operators per image and stage (48 calls per demo
iteration, 20 ms of 330). :func:`hungarian_assign_batch` computes every cost once on the
cross product of all predictions and all ground truths of the batch, moves that one matrix
to the CPU, and runs scipy on each image's diagonal block. The block of image ``b`` holds
exactly the numbers ``assign`` computes for that image (each cost is elementwise in its
prediction / ground-truth pair), so the assignments are the same; the tests compare them.

Costs whose value depends on the image (``BBoxL1Cost`` normalises by ``img_shape``) get the
boxes already divided by their own image's size and a unit ``img_shape``. A cost this module
does not know falls back to mmdet's per-image ``assign``.
"""
from typing import List, Sequence

import torch
from mmdet.models.task_modules.assigners import AssignResult, HungarianAssigner
from mmdet.models.task_modules.assigners.match_cost import (BBoxL1Cost, ClassificationCost,
                                                            FocalLossCost, IoUCost)
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import Tensor

# costs that are a function of one (prediction, ground truth) pair and not of the image
_PAIRWISE_COSTS = (ClassificationCost, IoUCost)
# pairwise after dividing the boxes by their image's (w, h, w, h)
_IMAGE_NORMALISED_COSTS = (BBoxL1Cost, )


def _is_batchable(assigner) -> bool:
    if type(assigner) is not HungarianAssigner:  # a subclass may change assign()
        return False
    for cost in assigner.match_costs:
        if isinstance(cost, FocalLossCost) and cost.binary_input:
            return False  # mask costs
        if not isinstance(cost, _PAIRWISE_COSTS + _IMAGE_NORMALISED_COSTS + (FocalLossCost, )):
            return False
    return True


def _image_factors(img_metas: Sequence[dict], counts: Sequence[int], ref: Tensor) -> Tensor:
    """(w, h, w, h) of each image, repeated for its ``counts[i]`` rows: [sum(counts), 4]."""
    factors = ref.new_tensor([[meta['img_shape'][1], meta['img_shape'][0]] * 2
                              for meta in img_metas])
    return factors.repeat_interleave(torch.as_tensor(counts, device=ref.device), dim=0)


def _empty_result(num_gts: int, num_preds: int, device) -> AssignResult:
    gt_inds = torch.full((num_preds, ), 0 if num_gts == 0 else -1, dtype=torch.long,
                         device=device)
    labels = torch.full((num_preds, ), -1, dtype=torch.long, device=device)
    return AssignResult(num_gts=num_gts, gt_inds=gt_inds, max_overlaps=None, labels=labels)


def hungarian_assign_batch(assigner, pred_instances: List[InstanceData],
                           gt_instances: List[InstanceData],
                           img_metas: List[dict]) -> List[AssignResult]:
    """``[assigner.assign(p, g, m) for p, g, m in zip(...)]``, batched when ``assigner`` is a
    plain ``HungarianAssigner`` with known costs. Predictions need ``bboxes`` and ``scores``
    (the same number per image is not required)."""
    if not _is_batchable(assigner):
        return [assigner.assign(pred_instances=p, gt_instances=g, img_meta=m)
                for p, g, m in zip(pred_instances, gt_instances, img_metas)]
    num_preds = [len(p) for p in pred_instances]
    num_gts = [len(g) for g in gt_instances]
    if sum(num_gts) == 0 or sum(num_preds) == 0:
        return [_empty_result(g, p, gt.labels.device)
                for g, p, gt in zip(num_gts, num_preds, gt_instances)]

    preds = InstanceData(bboxes=torch.cat([p.bboxes for p in pred_instances]),
                         scores=torch.cat([p.scores for p in pred_instances]))
    gts = InstanceData(bboxes=torch.cat([g.bboxes for g in gt_instances]),
                       labels=torch.cat([g.labels for g in gt_instances]))
    normalised_preds = InstanceData(
        bboxes=preds.bboxes / _image_factors(img_metas, num_preds, preds.bboxes))
    normalised_gts = InstanceData(
        bboxes=gts.bboxes / _image_factors(img_metas, num_gts, gts.bboxes))
    unit_image = dict(img_shape=(1, 1))

    costs = [match_cost(normalised_preds, normalised_gts, unit_image)
             if isinstance(match_cost, _IMAGE_NORMALISED_COSTS) else match_cost(preds, gts, None)
             for match_cost in assigner.match_costs]
    cost = torch.stack(costs).sum(dim=0).detach().cpu()  # summed as assign() sums them

    results = []
    row_start = col_start = 0
    for n_pred, n_gt, gt in zip(num_preds, num_gts, gt_instances):
        device = gt.labels.device
        if n_gt == 0 or n_pred == 0:
            results.append(_empty_result(n_gt, n_pred, device))
        else:
            block = cost[row_start:row_start + n_pred, col_start:col_start + n_gt]
            rows, cols = linear_sum_assignment(block)
            rows = torch.from_numpy(rows).to(device)
            cols = torch.from_numpy(cols).to(device)
            gt_inds = torch.zeros(n_pred, dtype=torch.long, device=device)
            gt_inds[rows] = cols + 1
            labels = torch.full((n_pred, ), -1, dtype=torch.long, device=device)
            labels[rows] = gt.labels[cols]
            results.append(AssignResult(num_gts=n_gt, gt_inds=gt_inds, max_overlaps=None,
                                        labels=labels))
        row_start += n_pred
        col_start += n_gt
    return results

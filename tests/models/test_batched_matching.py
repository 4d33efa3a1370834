"""hungarian_assign_batch gives mmdet's per-image HungarianAssigner.assign results."""
import pytest
import torch
from mmdet.registry import TASK_UTILS
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from lors_det.models.task_modules import batched_matching
from lors_det.models.task_modules.batched_matching import hungarian_assign_batch

ADAMIXER_COSTS = [dict(type='FocalLossCost', weight=2.0),
                  dict(type='BBoxL1Cost', weight=5.0, box_format='xyxy'),
                  dict(type='IoUCost', iou_mode='giou', weight=2.0)]
DETR_COSTS = [dict(type='ClassificationCost', weight=1.0),
              dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
              dict(type='IoUCost', iou_mode='iou', weight=2.0)]


def _boxes(n, height, width, gen):
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.7
    wh = torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.3 + 1
    return torch.cat([xy, xy + wh], 1)


def _batch(num_gts, shapes, num_preds=32, num_classes=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    preds, gts, metas = [], [], []
    for n_gt, (height, width) in zip(num_gts, shapes):
        preds.append(InstanceData(bboxes=_boxes(num_preds, height, width, gen),
                                  scores=torch.randn(num_preds, num_classes, generator=gen)))
        gts.append(InstanceData(bboxes=_boxes(n_gt, height, width, gen),
                                labels=torch.randint(0, num_classes, (n_gt, ), generator=gen)))
        metas.append(dict(img_shape=(height, width)))
    return preds, gts, metas


@pytest.mark.parametrize('costs', [ADAMIXER_COSTS, DETR_COSTS])
def test_same_assignment_as_per_image_assign(costs):
    init_default_scope('mmdet')
    assigner = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=costs))
    # different image sizes (the L1 cost normalises per image), an image without objects
    preds, gts, metas = _batch([3, 0, 7, 1, 12],
                               [(128, 128), (96, 160), (800, 1333), (64, 64), (512, 300)])
    batched = hungarian_assign_batch(assigner, preds, gts, metas)
    matched = 0
    for result, p, g, m in zip(batched, preds, gts, metas):
        reference = assigner.assign(pred_instances=p, gt_instances=g, img_meta=m)
        assert result.num_gts == reference.num_gts
        assert torch.equal(result.gt_inds, reference.gt_inds)
        assert torch.equal(result.labels, reference.labels)
        matched += int((result.gt_inds > 0).sum())
    assert matched == 3 + 7 + 1 + 12


def test_cost_blocks_equal_per_image_costs(monkeypatch):
    """The matrix scipy sees for each image is the one assign() builds."""
    init_default_scope('mmdet')
    assigner = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=ADAMIXER_COSTS))
    preds, gts, metas = _batch([2, 5, 4], [(128, 128), (200, 100), (90, 300)], seed=3)
    seen = []
    original = batched_matching.linear_sum_assignment

    def recording(block):
        seen.append(torch.as_tensor(block).clone())
        return original(block)

    monkeypatch.setattr(batched_matching, 'linear_sum_assignment', recording)
    hungarian_assign_batch(assigner, preds, gts, metas)
    assert len(seen) == 3
    for block, p, g, m in zip(seen, preds, gts, metas):
        reference = torch.stack([cost(p, g, m) for cost in assigner.match_costs]).sum(0)
        torch.testing.assert_close(block, reference, rtol=1e-6, atol=1e-5)


def test_all_images_empty_and_unknown_cost_falls_back():
    init_default_scope('mmdet')
    assigner = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=ADAMIXER_COSTS))
    preds, gts, metas = _batch([0, 0], [(64, 64), (64, 64)])
    results = hungarian_assign_batch(assigner, preds, gts, metas)
    assert all(int((r.gt_inds != 0).sum()) == 0 and r.num_gts == 0 for r in results)

    class CountingAssigner(type(assigner)):  # a subclass may change assign(): not batched
        calls = 0

        def assign(self, **kwargs):
            CountingAssigner.calls += 1
            return super().assign(**kwargs)

    counting = CountingAssigner(match_costs=ADAMIXER_COSTS)
    preds, gts, metas = _batch([2, 3], [(64, 64), (64, 64)])
    results = hungarian_assign_batch(counting, preds, gts, metas)
    assert CountingAssigner.calls == 2
    assert [int((r.gt_inds > 0).sum()) for r in results] == [2, 3]

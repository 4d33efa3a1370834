"""Loss and predict through the standard mmdet path on a tiny AdaMixer (R-18, 32-d, 2 stages)."""
import math

import pytest
import torch
import torch.nn.functional as F

from _adamixer_helpers import (build_model, make_data_samples,  # noqa: F401
                               mmdet_default_scope, small_model_cfg, spread_queries)

BATCH_SHAPE = (64, 96)
IMG_SHAPES = [(60, 90), (64, 80)]


def _model(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = build_model(small_model_cfg(**kwargs))
    model.init_weights()
    return model


def _inputs(seed=1):
    return torch.randn(2, 3, *BATCH_SHAPE, generator=torch.Generator().manual_seed(seed))


def _expected_keys(num_stages):
    return {f's{i}.{k}' for i in range(num_stages)
            for k in ('loss_cls', 'loss_bbox', 'loss_iou', 'pos_acc')}


def test_loss_without_ground_truth():
    model = _model()
    model.train()
    losses = model.loss(_inputs(), make_data_samples(IMG_SHAPES, BATCH_SHAPE))
    assert set(losses) == _expected_keys(2)
    for stage in range(2):
        assert losses[f's{stage}.loss_bbox'].item() == 0.0
        assert losses[f's{stage}.loss_iou'].item() == 0.0
        cls = losses[f's{stage}.loss_cls']
        assert torch.isfinite(cls) and cls.item() > 0


def _focal_ref(logits, labels, num_classes, alpha=0.25, gamma=2.0):
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].double()
    p = logits.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction='none') * weight).sum()


def _giou_ref(a, b):
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area(a) + area(b) - inter
    enc = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(-1)
    iou = inter / union
    return iou - (enc - union) / enc


def test_loss_with_one_box_matches_hand_computation():
    """One query per image: the Hungarian match is forced, so every loss has a closed form."""
    model = _model(num_query=1)
    spread_queries(model)
    model.train()
    gt_boxes = [[[10., 12., 50., 40.]], [[30., 5., 70., 60.]]]
    gt_labels = [[2], [0]]
    samples = make_data_samples(IMG_SHAPES, BATCH_SHAPE, gt_boxes, gt_labels)
    inputs = _inputs()
    losses = model.loss(inputs, samples)
    assert set(losses) == _expected_keys(2)
    assert all(torch.isfinite(v) for v in losses.values())

    with torch.no_grad():
        x = model.extract_feat(inputs)
        queries = model.rpn_head.predict(x, samples)
        outs = model.roi_head.forward(x, queries, samples)
    labels = torch.tensor([2, 0])
    gt = torch.tensor(gt_boxes, dtype=torch.float64).view(2, 4)
    whwh = torch.tensor([[90., 60., 90., 60.], [80., 64., 80., 64.]], dtype=torch.float64)
    num_pos = 2.0
    for stage, (cls, boxes) in enumerate(outs):
        cls, boxes = cls.double().view(2, 3), boxes.double().view(2, 4)
        loss_cls = 2.0 * _focal_ref(cls, labels, 3) / num_pos
        loss_bbox = 5.0 * (boxes / whwh - gt / whwh).abs().sum() / num_pos
        loss_iou = 2.0 * (1 - _giou_ref(boxes, gt)).sum() / num_pos
        torch.testing.assert_close(losses[f's{stage}.loss_cls'].double(), loss_cls,
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(losses[f's{stage}.loss_bbox'].double(), loss_bbox,
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(losses[f's{stage}.loss_iou'].double(), loss_iou,
                                   rtol=1e-4, atol=1e-6)


def test_gradients_reach_every_trainable_parameter():
    model = _model(num_query=4)
    spread_queries(model)
    model.train()
    samples = make_data_samples(IMG_SHAPES, BATCH_SHAPE, [[[10., 12., 50., 40.]],
                                                          [[30., 5., 70., 60.]]], [[2], [1]])
    losses = model.loss(_inputs(), samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    missing = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            # frozen stem/stage 1, and the initial boxes (detached, so not learnable)
            assert name.startswith(('backbone.conv1', 'backbone.bn1', 'backbone.layer1')) \
                or name == 'rpn_head.init_proposal_bboxes.weight', name
            assert param.grad is None, name
            continue
        grad = param.grad
        if grad is None or not torch.isfinite(grad).all() or grad.abs().sum() == 0:
            missing.append(name)
    assert missing == []


def test_next_stage_gets_detached_boxes():
    """Stage 1's box losses must not reach stage 0's box regressor (xyzr is detached)."""
    model = _model(num_query=4)
    spread_queries(model)
    model.train()
    samples = make_data_samples(IMG_SHAPES, BATCH_SHAPE, [[[10., 12., 50., 40.]],
                                                          [[30., 5., 70., 60.]]], [[2], [1]])
    losses = model.loss(_inputs(), samples)
    (losses['s1.loss_bbox'] + losses['s1.loss_iou']).backward()
    fc_reg0 = model.roi_head.bbox_head[0].fc_reg.weight
    assert fc_reg0.grad is None or torch.equal(fc_reg0.grad, torch.zeros_like(fc_reg0))
    # ... while stage 0's content path does carry stage 1's gradient
    assert model.roi_head.bbox_head[0].ffn.layers[1].weight.grad.abs().sum() > 0


def _clamp_xyxy(boxes, shape):
    """Hand-written reference: x to [0, w], y to [0, h] for an image of shape (h, w)."""
    h, w = shape
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def test_predict_topk_sorted_clipped_and_rescaled():
    num_query, num_classes, max_per_img = 5, 3, 7
    model = _model(num_query=num_query, num_classes=num_classes, max_per_img=max_per_img)
    spread_queries(model)
    model.eval()
    scale_factors = [(0.5, 0.25), (2.0, 1.5)]
    samples = make_data_samples(IMG_SHAPES, BATCH_SHAPE, scale_factors=scale_factors)
    inputs = _inputs()
    with torch.no_grad():
        results = model.predict(inputs, samples, rescale=True)
        x = model.extract_feat(inputs)
        cls, boxes = model.roi_head.forward(x, model.rpn_head.predict(x, samples), samples)[-1]
    clipped = 0
    for img, sample in enumerate(results):
        pred = sample.pred_instances
        assert len(pred) == max_per_img
        scores = cls[img].sigmoid().flatten()
        ref_scores, ref_idx = scores.sort(descending=True)
        ref_idx = ref_idx[:max_per_img]
        scale = torch.tensor(scale_factors[img]).repeat(2)
        # sorted by score, no NMS
        torch.testing.assert_close(pred.scores, ref_scores[:max_per_img])
        assert torch.equal(pred.labels, ref_idx % num_classes)
        # the query's last-stage box clipped to the network input, divided by the scale
        # factor, clipped to the original image
        raw = boxes[img][ref_idx // num_classes]
        ref = _clamp_xyxy(_clamp_xyxy(raw, sample.img_shape) / scale, sample.ori_shape)
        torch.testing.assert_close(pred.bboxes, ref)
        clipped += int((raw / scale != ref).any(dim=1).sum())
        h, w = sample.ori_shape
        assert (pred.bboxes >= 0).all()
        assert (pred.bboxes[:, 0::2] <= w).all() and (pred.bboxes[:, 1::2] <= h).all()
    assert clipped > 0, 'no box needed clipping: the test would not check it'
    # one query can produce several detections (more detections than queries)
    assert max_per_img > num_query


def test_predict_without_rescale_returns_network_input_boxes():
    model = _model(num_query=3, max_per_img=3)
    model.eval()
    samples = make_data_samples(IMG_SHAPES, BATCH_SHAPE, scale_factors=[(0.5, 0.5)] * 2)
    with torch.no_grad():
        results = model.predict(_inputs(), samples, rescale=False)
    # at init every query is the whole unpadded image and every delta is 0
    h, w = IMG_SHAPES[0]
    torch.testing.assert_close(results[0].pred_instances.bboxes,
                               torch.tensor([[0., 0., w, h]] * 3), rtol=1e-5, atol=1e-4)


def test_decoder_config_errors():
    cfg = small_model_cfg()
    cfg.roi_head.stage_loss_weights = [1.0] * 3
    with pytest.raises(ValueError, match='stage_loss_weights'):
        build_model(cfg)
    cfg = small_model_cfg()
    cfg.train_cfg.rcnn = [cfg.train_cfg.rcnn]  # one stage config for two stages
    with pytest.raises(ValueError, match='train_cfg'):
        build_model(cfg)
    cfg = small_model_cfg()
    cfg.roi_head.init_cfg = dict(type='Xavier', layer='Linear')
    with pytest.raises(ValueError, match='init_cfg'):
        build_model(cfg)


def test_train_step_through_data_preprocessor_keeps_query_boxes_fixed():
    from mmengine.optim import OptimWrapper
    model = _model(num_query=4)
    spread_queries(model)
    model.train()
    gen = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
              for h, w in IMG_SHAPES]
    samples = make_data_samples(IMG_SHAPES, BATCH_SHAPE, [[[10., 12., 50., 40.]],
                                                          [[30., 5., 70., 60.]]], [[2], [1]])
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    log_vars = model.train_step(dict(inputs=images, data_samples=samples), optim)
    assert math.isclose(log_vars['loss'].item(),
                        sum(v.item() for k, v in log_vars.items()
                            if 'loss' in k and k != 'loss'), rel_tol=1e-5)
    assert set(k for k in log_vars if k != 'loss') == _expected_keys(2)
    after = dict(model.named_parameters())
    # AdamW skips parameters without gradient: the detached initial boxes do not move
    assert torch.equal(after['rpn_head.init_proposal_bboxes.weight'],
                       before['rpn_head.init_proposal_bboxes.weight'])
    for name in ['rpn_head.init_content_features.weight', 'neck.gn_out.weight',
                 'roi_head.bbox_head.1.sampling_n_mixing.adaptive_mixing.out_proj.weight',
                 'roi_head.bbox_head.0.iof_tau']:
        assert not torch.equal(after[name], before[name]), name

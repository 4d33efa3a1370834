"""Shared builders for the AdaMixer tests (not collected: the name does not start with test_)."""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import lors_det  # noqa: F401  (registers the modules)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

REPO = Path(__file__).resolve().parents[2]
BASE_MODEL_CFG = REPO / 'configs' / '_base_' / 'models' / 'adamixer_r50.py'


@pytest.fixture(autouse=True)
def mmdet_default_scope():
    """Build in mmdet's scope even if another test left a different default scope behind."""
    init_default_scope('mmdet')
    yield


def load_model_cfg():
    """The R50 model dict of the base config, with the backbone checkpoint switched off."""
    init_default_scope('mmdet')
    model = Config.fromfile(str(BASE_MODEL_CFG)).model
    model.backbone.init_cfg = None  # never download in tests
    return model


def small_model_cfg(num_stages=2, num_query=5, num_classes=3, max_per_img=7):
    """A tiny AdaMixer (R-18 with 8 base channels, 32-d queries) derived from the base config."""
    model = load_model_cfg()
    dim = 32
    # C2..C5 = 8, 16, 32, 64 channels; no zero-init residual BN so that (randomly initialised)
    # residual branches carry gradients
    model.backbone.update(depth=18, base_channels=8, zero_init_residual=False)
    model.neck.update(in_channels=[8, 16, 32, 64], out_channels=dim)
    model.rpn_head.update(num_query=num_query, content_dim=dim)
    stage = copy.deepcopy(model.roi_head.bbox_head)
    stage.update(num_classes=num_classes, num_heads=4, feedforward_channels=64, content_dim=dim,
                 feat_channels=dim, in_points=4, out_points=6, n_groups=4)
    model.roi_head.update(num_stages=num_stages, stage_loss_weights=[1.0] * num_stages,
                          content_dim=dim,
                          bbox_head=[copy.deepcopy(stage) for _ in range(num_stages)])
    model.test_cfg.rcnn.max_per_img = max_per_img
    return model


def build_model(model_cfg):
    init_default_scope('mmdet')
    return MODELS.build(model_cfg)


def make_data_samples(img_shapes, batch_shape, gt_boxes=None, gt_labels=None,
                      scale_factors=None):
    """DetDataSamples with the given unpadded img_shapes (h, w) inside a padded batch_shape."""
    samples = []
    for i, img_shape in enumerate(img_shapes):
        scale_factor = scale_factors[i] if scale_factors is not None else (1.0, 1.0)
        sample = DetDataSample(metainfo=dict(
            img_shape=tuple(img_shape), pad_shape=tuple(batch_shape),
            batch_input_shape=tuple(batch_shape), ori_shape=tuple(img_shape),
            scale_factor=tuple(scale_factor)))
        boxes = torch.zeros(0, 4) if gt_boxes is None else torch.as_tensor(
            gt_boxes[i], dtype=torch.float32).reshape(-1, 4)
        labels = torch.zeros(0, dtype=torch.long) if gt_labels is None else torch.as_tensor(
            gt_labels[i], dtype=torch.long).reshape(-1)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        samples.append(sample)
    return samples


def spread_queries(model, seed=0):
    """Give the queries distinct boxes and the box/cls heads non-zero weights.

    At init every query is the whole image and every delta is 0, so all queries are identical;
    tests that need generic (tie-free, gradient-carrying) behaviour call this after init.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        boxes = model.rpn_head.init_proposal_bboxes.weight
        n = boxes.size(0)
        boxes[:, :2] = 0.3 + 0.4 * torch.rand(n, 2, generator=gen)
        boxes[:, 2:] = 0.2 + 0.4 * torch.rand(n, 2, generator=gen)
        for stage in model.roi_head.bbox_head:
            stage.fc_reg.weight.copy_(0.05 * torch.randn(stage.fc_reg.weight.shape, generator=gen))
            stage.fc_cls.weight.copy_(0.5 * torch.randn(stage.fc_cls.weight.shape, generator=gen))
            gen_w = stage.sampling_n_mixing.adaptive_mixing.parameter_generator[0].weight
            gen_w.copy_(0.02 * torch.randn(gen_w.shape, generator=gen))

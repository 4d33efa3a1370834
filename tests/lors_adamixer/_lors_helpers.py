"""Tiny AdaMixer+LORS models for the integration tests (not collected: no test_ prefix)."""
import copy
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import lors_det  # noqa: F401  (registers the modules)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'

# small dims, all different, so a transposed or mis-split tensor cannot go unnoticed
DIM, G, C, P_IN, P_OUT = 32, 2, 16, 4, 6
KS, KG, RS = [2, 3, 4], [1, 2, 3], [2, 3, 4]
NUM_STAGES, NUM_QUERY, NUM_CLASSES = 3, 5, 3
BATCH_SHAPE = (64, 96)
IMG_SHAPES = [(60, 90), (64, 80)]


def load_cfg(rel_path):
    init_default_scope('mmdet')
    return Config.fromfile(str(CONFIGS / rel_path))


def offline(model_cfg):
    """Drop every Pretrained init_cfg (no downloads in tests)."""
    if isinstance(model_cfg, dict):
        init_cfg = model_cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            model_cfg['init_cfg'] = None
        for value in model_cfg.values():
            offline(value)
    elif isinstance(model_cfg, list):
        for value in model_cfg:
            offline(value)
    return model_cfg


def tiny_lors_cfg(zero_init='B', **lors_overrides):
    """The shipped LORS R-50 model config scaled down: R-18 with 8 base channels, 32-d queries,
    3 stages, G=2 (C=16), P_in=4, P_out=6, LORS^A rank k=[2,3,4] with K=[1,2,3] terms, LORS^T
    rank r=[2,3,4]."""
    model = offline(load_cfg('lors/adamixer-lors_r50_8xb2-1x_coco.py').model)
    model.backbone.update(depth=18, base_channels=8, zero_init_residual=False)
    model.neck.update(in_channels=[8, 16, 32, 64], out_channels=DIM)
    model.rpn_head.update(num_query=NUM_QUERY, content_dim=DIM)
    model.roi_head.update(num_stages=NUM_STAGES, stage_loss_weights=[1.0] * NUM_STAGES,
                          content_dim=DIM)
    model.roi_head.bbox_head.update(
        num_classes=NUM_CLASSES, num_heads=4, feedforward_channels=64, content_dim=DIM,
        feat_channels=DIM, in_points=P_IN, out_points=P_OUT, n_groups=G)
    model.roi_head.lors_cfg.update(generator_rank=KS, generator_num_terms=KG, out_proj_rank=RS,
                                   out_proj_zero_init=zero_init, **lors_overrides)
    model.test_cfg.rcnn.max_per_img = NUM_QUERY * NUM_CLASSES
    return model


def build(model_cfg, seed=0, init=True):
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(model_cfg))
    if init:
        model.init_weights()
    return model


def spread_queries(model, seed=0):
    """Distinct query boxes and non-zero heads/generators, so that queries differ, no scores tie
    and gradients reach every stage (at init all queries are the same whole-image box)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        boxes = model.rpn_head.init_proposal_bboxes.weight
        boxes[:, :2] = 0.3 + 0.4 * torch.rand(boxes.size(0), 2, generator=gen)
        boxes[:, 2:] = 0.2 + 0.4 * torch.rand(boxes.size(0), 2, generator=gen)
        for stage in model.roi_head.bbox_head:
            stage.fc_reg.weight.copy_(0.05 * torch.randn(stage.fc_reg.weight.shape, generator=gen))
            stage.fc_cls.weight.copy_(0.5 * torch.randn(stage.fc_cls.weight.shape, generator=gen))
        shared = getattr(model.roi_head, 'shared_mixing', None)
        if hasattr(shared, 'parameter_generator'):
            weight = shared.parameter_generator.weight
            weight.copy_(0.02 * torch.randn(weight.shape, generator=gen))


def mixers(model):
    """The stages' LORS mixers, stage order."""
    return [stage.sampling_n_mixing.adaptive_mixing for stage in model.roi_head.bbox_head]


def randomize_private_terms(model, seed=1, scale=0.1):
    """Every zero-initialised LORS term non-zero: core generators, the zero LORS^T factor and the
    private out-projection biases."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for mixer in mixers(model):
        params += list(mixer.channel_residual.core_generator.parameters())
        params += list(mixer.spatial_residual.core_generator.parameters())
        out_proj = mixer.out_proj
        params += [out_proj.B if out_proj.zero_init == 'B' else out_proj.A, out_proj.bias]
    with torch.no_grad():
        for p in params:
            p.copy_(scale * torch.randn(p.shape, generator=gen))


def make_data_samples(gt=True, dtype=torch.float32):
    samples = []
    gts = [([[5., 6., 40., 50.], [30., 10., 80., 55.]], [0, 2]), ([[10., 12., 70., 60.]], [1])]
    for (h, w), (boxes, labels) in zip(IMG_SHAPES, gts):
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), pad_shape=BATCH_SHAPE, batch_input_shape=BATCH_SHAPE,
            ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        if not gt:
            boxes, labels = [], []
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=dtype).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long))
        samples.append(sample)
    return samples


def make_inputs(seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(IMG_SHAPES), 3, *BATCH_SHAPE, generator=gen).to(dtype)


def generic_tiny_model(lors: bool):
    """``(config, model)``: the tiny LORS model (``lors``) or the plain AdaMixer at the same
    dims (both sharing switches off), with distinct queries and non-zero private terms."""
    cfg = tiny_lors_cfg()
    if not lors:
        cfg.roi_head.lors_cfg.update(share_generator=False, share_out_proj=False)
    model = build(cfg)
    spread_queries(model)
    if lors:
        randomize_private_terms(model)
    return cfg, model

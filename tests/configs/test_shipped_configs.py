"""Every shipped config loads, builds its model offline, and keeps the documented settings.

Parameter counts of the COCO configs are derived from the official architecture
(adamixer_spec.md section 2.2): 134,790,904 for R-50 with 100 queries, +52,000 for 300
queries (the two query embeddings: 200 more positions x (4 + 256)), and R-101 adds its
deeper backbone (42,500,160 - 23,508,032 = 18,992,128 parameters, torchvision counts
without the fc layer).
"""
from pathlib import Path

import pytest
from mmengine.config import Config

from mmdet.registry import MODELS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)

R50_100Q = 134_790_904
QUERIES_300 = 52_000
R101_EXTRA = 42_500_160 - 23_508_032


def _config_id(path):
    return str(path.relative_to(REPO / 'configs'))


def _offline(model_cfg):
    """No pretrained downloads in tests: drop every Pretrained init_cfg."""
    if isinstance(model_cfg, dict):
        if model_cfg.get('init_cfg', {}) and model_cfg['init_cfg'].get('type') == 'Pretrained':
            model_cfg['init_cfg'] = None
        for value in model_cfg.values():
            _offline(value)
    elif isinstance(model_cfg, list):
        for value in model_cfg:
            _offline(value)
    return model_cfg


def _load(rel_path):
    return Config.fromfile(str(REPO / 'configs' / rel_path))


def _num_params(model):
    return sum(p.numel() for p in model.parameters())


def test_configs_exist():
    names = {_config_id(p) for p in CONFIGS}
    for required in ('adamixer/adamixer_r50_8xb2-1x_coco.py',
                     'adamixer/adamixer_r50_8xb2-ms-480-800-3x_coco.py',
                     'adamixer/adamixer_r50_8xb2-300q-crop-ms-480-800-3x_coco.py',
                     'adamixer/adamixer_r101_8xb2-ms-480-800-3x_coco.py',
                     'adamixer/adamixer_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py',
                     'demo/adamixer_tiny_1xb8-demo_digits.py'):
        assert required in names


@pytest.mark.parametrize('path', CONFIGS, ids=_config_id)
def test_config_builds_with_plugin_and_runtime(path):
    cfg = Config.fromfile(str(path))
    assert 'lors_det' in cfg.custom_imports['imports'], 'configs must load the plugin'
    assert cfg.default_scope == 'mmdet'
    for key in ('train_dataloader', 'val_dataloader', 'val_evaluator', 'optim_wrapper',
                'param_scheduler', 'train_cfg'):
        assert key in cfg, f'{path.name} lacks {key}'
    model = MODELS.build(_offline(cfg.model))
    assert _num_params(model) > 0
    # the decoder must score exactly the dataset's classes
    num_classes = len(cfg.train_dataloader.dataset.get('metainfo', {}).get('classes', ())) or (
        10 if 'digits' in path.name else 80)
    head = model.roi_head.bbox_head[-1] if hasattr(model, 'roi_head') else model.bbox_head
    assert head.num_classes == num_classes


@pytest.mark.parametrize('rel_path, expected', [
    ('adamixer/adamixer_r50_8xb2-1x_coco.py', R50_100Q),
    ('adamixer/adamixer_r50_8xb2-ms-480-800-3x_coco.py', R50_100Q),
    ('adamixer/adamixer_r50_8xb2-300q-crop-ms-480-800-3x_coco.py', R50_100Q + QUERIES_300),
    ('adamixer/adamixer_r101_8xb2-ms-480-800-3x_coco.py', R50_100Q + R101_EXTRA),
    ('adamixer/adamixer_r101_8xb2-300q-crop-ms-480-800-3x_coco.py',
     R50_100Q + R101_EXTRA + QUERIES_300),
])
def test_coco_parameter_counts(rel_path, expected):
    model = MODELS.build(_offline(_load(rel_path).model))
    assert _num_params(model) == expected


@pytest.mark.parametrize('rel_path, epochs, milestones, queries, warmup', [
    ('adamixer/adamixer_r50_8xb2-1x_coco.py', 12, [8, 11], 100, 500),
    ('adamixer/adamixer_r50_8xb2-ms-480-800-3x_coco.py', 36, [27, 33], 100, 500),
    ('adamixer/adamixer_r50_8xb2-300q-crop-ms-480-800-3x_coco.py', 36, [24, 33], 300, 500),
    ('adamixer/adamixer_r101_8xb2-ms-480-800-3x_coco.py', 36, [27, 33], 100, 500),
    ('adamixer/adamixer_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py', 36, [24, 33], 300, 1000),
])
def test_coco_schedules_follow_the_official_configs(rel_path, epochs, milestones, queries,
                                                    warmup):
    cfg = _load(rel_path)
    assert cfg.train_cfg.max_epochs == epochs
    warmup_cfg, step_cfg = cfg.param_scheduler
    assert (warmup_cfg.type, warmup_cfg.end, warmup_cfg.start_factor) == ('LinearLR', warmup,
                                                                          0.001)
    assert (step_cfg.type, step_cfg.milestones, step_cfg.gamma) == ('MultiStepLR', milestones,
                                                                    0.1)
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2.5e-5, weight_decay=1e-4)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=1, norm_type=2)
    assert cfg.auto_scale_lr.base_batch_size == 16 == 8 * cfg.train_dataloader.batch_size
    assert cfg.model.rpn_head.num_query == queries == cfg.model.test_cfg.rcnn.max_per_img


def test_swin_s_backbone_and_decay_exemptions():
    cfg = _load('adamixer/adamixer_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py')
    backbone = cfg.model.backbone
    assert backbone.type == 'SwinTransformer'
    assert (backbone.depths, backbone.num_heads, backbone.drop_path_rate) == (
        [2, 2, 18, 2], [3, 6, 12, 24], 0.2)
    assert 'depth' not in backbone  # the ResNet keys are deleted, not merged
    assert cfg.model.neck.in_channels == [96, 192, 384, 768]
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    for name in ('absolute_pos_embed', 'relative_position_bias_table', 'norm'):
        assert keys[name] == dict(decay_mult=0.)


@pytest.mark.parametrize('path', CONFIGS, ids=_config_id)
def test_every_config_saves_crash_safe_resumes_exactly_and_evaluates_checked(path):
    """The data-loss and silent-error fixes are only as good as their use: every shipped
    config trains with the crash-safe checkpoint hook and the exact-resume loop, and scores
    the ground truth with the box rule training uses."""
    cfg = Config.fromfile(str(path))
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    assert cfg.train_cfg.type == 'ResumableEpochBasedTrainLoop'
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        if evaluator and evaluator.get('ann_file'):
            assert evaluator.type == 'CheckedCocoMetric', key

"""Every VeRA / CondLoRA config loads with mmengine, builds its backbone offline, and trains
exactly the number of backbone parameters its formula gives (VeRA: Σ (d_out + r); CondLoRA:
r (d_out + d_in) per (stage, role, shape) group, see _arch_shapes.py)."""
from pathlib import Path

import pytest
from mmdet.registry import HOOKS, MODELS
from mmengine.config import Config
from mmengine.logging import MMLogger

import lors_det  # noqa: F401
from lors_det.models.adapters import count_trainable_parameters, iter_adapter_layers
from lors_det.models.backbones import PEFTBackbone

from _arch_shapes import (condlora_count, resnet_basic_convs, resnet_bottleneck_convs,
                          swin_linears, vera_count)

REPO = Path(__file__).resolve().parents[2]

R50 = resnet_bottleneck_convs((4, 6, 3))  # layer2-4 of ResNet-50
SWIN_S = swin_linears((2, 2, 18, 2))
TINY = resnet_basic_convs(base=16)  # the demo's ResNet-18 with 16 base channels

# config -> (target layers, adapter type, rank)
CONFIGS = {}
for det in ('adamixer', 'adamixer-lors'):
    for kind, rank in (('vera', 256), ('condlora', 8)):
        CONFIGS.update({
            f'adapters/{det}_r50-{kind}_8xb2-1x_coco.py': (R50, kind, rank),
            f'adapters/{det}_r50-{kind}_8xb2-ms-480-800-3x_coco.py': (R50, kind, rank),
            f'adapters/{det}_swin-s-{kind}_8xb2-300q-crop-ms-480-800-3x_coco.py':
            (SWIN_S, kind, rank),
        })
CONFIGS['demo/adamixer_tiny-vera_1xb8-demo_digits.py'] = (TINY, 'vera', 64)
CONFIGS['demo/adamixer_tiny-condlora_1xb8-demo_digits.py'] = (TINY, 'condlora', 8)


@pytest.fixture(autouse=True)
def quiet_logger():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')
    yield
    logger.setLevel(level)


def test_formulas_match_the_documented_counts():
    assert vera_count(R50, 256) == 35_840 and condlora_count(R50, 8) == (207_872, 15)
    assert vera_count(SWIN_S, 256) == 105_792 and condlora_count(SWIN_S, 8) == (184_320, 16)
    assert vera_count(TINY, 64) == 2_400 and condlora_count(TINY, 8) == (50_944, 14)


def test_every_adapter_config_is_covered():
    shipped = {str(p.relative_to(REPO / 'configs')) for p in (REPO / 'configs').rglob('*.py')
               if '_base_' not in p.parts
               and p.stem.split('_')[1].endswith(('-vera', '-condlora'))}
    assert shipped == set(CONFIGS)


@pytest.mark.parametrize('rel_path', sorted(CONFIGS))
def test_config_builds_backbone_with_formula_count(rel_path):
    layers, kind, rank = CONFIGS[rel_path]
    cfg = Config.fromfile(str(REPO / 'configs' / rel_path))
    assert 'lors_det' in cfg.custom_imports['imports']
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.type == 'PEFTBackbone'
    assert backbone_cfg.adapter.type == {'vera': 'VeRA', 'condlora': 'CondLoRA'}[kind]
    assert backbone_cfg.adapter.rank == rank
    # the inner backbone must still load its pretrained weights in training ...
    assert backbone_cfg.module.init_cfg.type == 'Pretrained'
    backbone_cfg.module.init_cfg = None  # ... but not here: offline, no download
    backbone = MODELS.build(backbone_cfg)
    assert isinstance(backbone, PEFTBackbone)
    assert len(list(iter_adapter_layers(backbone))) == len(layers)
    expected = vera_count(layers, rank) if kind == 'vera' else condlora_count(layers, rank)[0]
    assert count_trainable_parameters(backbone) == expected
    backbone.train()  # frozen_stages is re-applied by train(): the adapters stay trainable
    assert count_trainable_parameters(backbone) == expected
    hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
    assert hooks == ['AdapterCheckpointHook'] and HOOKS.get(hooks[0]) is not None

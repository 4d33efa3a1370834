"""DDP without ``find_unused_parameters`` needs a gradient for every trainable parameter.

No shipped config sets ``find_unused_parameters``: DDP would stop at the 2nd iteration if a
parameter with ``requires_grad=True`` got no gradient. The initial query boxes (detached) are
``requires_grad=False`` for that reason. This checks every detector family on one training
step of its demo config (the same modules as the COCO configs, smaller): plain AdaMixer, the
LORS decoder (shared stack + per-stage views) and both adapter backbones.
"""
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

from _adamixer_helpers import make_data_samples

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIGS = [
    'adamixer_tiny_1xb8-demo_digits.py',
    'adamixer-lors_tiny_1xb8-demo_digits.py',
    'adamixer_tiny-vera_1xb8-demo_digits.py',
    'adamixer_tiny-condlora_1xb8-demo_digits.py',
]


@pytest.mark.parametrize('config', DEMO_CONFIGS)
def test_every_trainable_parameter_gets_a_gradient(config):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', config))
    backbone = cfg.model.backbone
    # the adapter demos load a trained demo backbone: not needed to check the gradients
    (backbone.module if backbone.type == 'PEFTBackbone' else backbone).init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    size = (96, 96)
    samples = make_data_samples([size, size], size,
                                gt_boxes=[[[8., 10., 50., 60.], [55., 20., 90., 88.]],
                                          [[20., 30., 70., 75.]]],
                                gt_labels=[[1, 3], [7]])
    losses = model.loss(torch.randn(2, 3, *size), samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) > 0
    assert [n for n, p in trainable.items() if p.grad is None] == []
    # the only parameter left out on purpose: the detached initial boxes
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert 'rpn_head.init_proposal_bboxes.weight' in frozen
    assert all(n.startswith('backbone.') or n == 'rpn_head.init_proposal_bboxes.weight'
               for n in frozen), frozen

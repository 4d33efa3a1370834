"""Shared pytest setup: every test builds mmdet-scoped registries.

Some tests run an mmengine ``Runner``, which leaves the global default scope at
whatever the runner set; resetting it per test keeps ``MODELS.build`` of both
mmdet and lors_det classes order-independent.
"""
import pytest
from mmdet.utils import register_all_modules

import lors_det  # noqa: F401  (registers lors_det modules)


@pytest.fixture(autouse=True)
def mmdet_default_scope():
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


@pytest.fixture(autouse=True)
def mmcv_attention_default_dropout():
    """Undo what building a DETR config does to mmcv's MultiheadAttention: its deprecated
    `dropout=` argument is written into the shared default `dropout_layer` dict, so later
    default-built attentions (mmdet's DIIHead) would drop outputs in the next tests."""
    yield
    from mmcv.cnn.bricks.transformer import MultiheadAttention
    for default in MultiheadAttention.__init__.__defaults__ or ():
        if isinstance(default, dict) and default.get('type') == 'Dropout':
            default['drop_prob'] = 0.0

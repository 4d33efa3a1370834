# Copyright (c) lors_det authors.
"""Helpers shared by the scripts in ``tools/analysis_tools`` (not a script itself).

* :func:`load_config` / :func:`build_detector`: a config with ``--cfg-options`` applied and its
  model, built in the config's default scope (``custom_imports`` in the config registers the
  lors_det modules), optionally initialised (``init=True``: the model's own init without
  pretrained weights) or loaded from a checkpoint. Nothing is downloaded.
* :func:`dummy_batch`: a preprocessed batch of synthetic images of a given size, i.e. what
  the test dataloader + the model's ``data_preprocessor`` give for images of that size.
"""
import copy
import json
import os
import os.path as osp
import sys
from typing import Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import lors_det  # noqa: E402,F401  (registers modules and the checkpoint allow-list)

CFG_OPTIONS_HELP = (
    'override settings of the config, as key=value pairs; a list is written '
    'key="[a,b]" or key=a,b and a nested list key="[(a,b),(c,d)]" (quotes needed, '
    'no spaces)')


def parse_shape(values: Sequence[int], option: str = '--shape') -> Tuple[int, int]:
    """``[S]`` -> ``(S, S)``; ``[H, W]`` -> ``(H, W)``; anything else raises naming ``option``."""
    values = list(values)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f'{option} takes one size S (S x S) or two sizes H W, all >= 1; '
                         f'got {values}')
    return int(values[0]), int(values[1])


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _drop_pretrained(cfg) -> None:
    """Remove every ``init_cfg=dict(type='Pretrained', ...)`` (nothing is downloaded)."""
    if isinstance(cfg, dict):
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for value in cfg.values():
            _drop_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _drop_pretrained(value)


def build_detector(cfg: Config, checkpoint: Optional[str] = None,
                   device: str = 'cpu', init: bool = False) -> torch.nn.Module:
    """``cfg.model`` built in ``cfg.default_scope`` (default mmdet), on ``device``, in eval
    mode; with ``init``, initialised by its own ``init_weights`` (pretrained weights left out);
    loaded from ``checkpoint`` (strict) when given."""
    from mmdet.registry import MODELS
    from mmengine.runner import load_checkpoint

    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if 'model' not in cfg:
        raise KeyError(f'{cfg.filename}: the config has no `model`')
    model_cfg = copy.deepcopy(cfg.model)
    if init:  # the model's own init, without pretrained weights
        _drop_pretrained(model_cfg)
    model = MODELS.build(model_cfg)
    if init:
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel('WARNING')  # mmengine logs every parameter's init at INFO
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    if checkpoint is not None:  # read safely; a missing file is named by lors_det.checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                        logger='current')
    return model.to(device).eval()


def synthetic_batch(shape: Tuple[int, int], batch_size: int = 1, seed: int = 0,
                    num_gts: int = 0, num_classes: int = 80) -> dict:
    """What a dataloader gives for ``batch_size`` random uint8 images of ``shape`` ``(H, W)``
    that need no resize: ``dict(inputs=[3, H, W] tensors, data_samples=[...])`` with
    ``img_shape = ori_shape = (H, W)`` and ``scale_factor = (1, 1)`` in the metainfo, and, with
    ``num_gts``, that many random ground-truth boxes (labels below ``num_classes``) per image."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    height, width = shape
    gen = torch.Generator().manual_seed(seed)
    images, samples = [], []
    for _ in range(batch_size):
        images.append(torch.randint(0, 256, (3, height, width), generator=gen,
                                    dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0)))
        if num_gts:
            size = torch.tensor([width, height], dtype=torch.float32)
            xy = torch.rand(num_gts, 2, generator=gen) * size * 0.7
            wh = torch.rand(num_gts, 2, generator=gen) * size * 0.3 + 4
            sample.gt_instances = InstanceData(
                bboxes=torch.cat([xy, xy + wh], 1),
                labels=torch.randint(0, num_classes, (num_gts,), generator=gen))
        samples.append(sample)
    return dict(inputs=images, data_samples=samples)


def dummy_batch(model: torch.nn.Module, shape: Tuple[int, int], batch_size: int = 1,
                seed: int = 0, num_gts: int = 0, num_classes: int = 80) -> dict:
    """:func:`synthetic_batch` through ``model.data_preprocessor``: ``dict(inputs=[B, 3, H',
    W'], data_samples=[DetDataSample])`` with ``H', W'`` the padded size, which every sample's
    metainfo has as ``pad_shape`` and ``batch_input_shape``."""
    data = model.data_preprocessor(
        synthetic_batch(shape, batch_size, seed, num_gts, num_classes), False)
    padded = tuple(data['inputs'].shape[-2:])
    for sample in data['data_samples']:
        for key in ('pad_shape', 'batch_input_shape'):
            if key not in sample.metainfo:  # a preprocessor that does not pad
                sample.set_metainfo({key: padded})
    return data


def write_json(path: str, report: dict) -> None:
    """Write a tool's ``report`` to ``path`` (``--out-json``), creating its folder."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)

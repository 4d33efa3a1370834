"""Adapter checkpoints from config and checkpoint files: extract an adapter checkpoint from a
full one, compose one back into a full checkpoint, merge the adapters into W0.

These build models from config paths, so they live here rather than with the adapter layers
(:mod:`lors_det.models.adapters.checkpoint` holds the model-level functions they use).
CLI: ``tools/model_converters/adapter_ckpt.py``.
"""
import os
from collections import OrderedDict

import torch
import torch.nn as nn

from ..models.adapters.applier import merge_and_unload
from ..models.adapters.checkpoint import (CONTENTS, adapter_configs, adapter_state_dict,
                                          is_adapter_key, load_adapter_checkpoint,
                                          read_state_and_meta)


def _build_model(config: str, init_weights: bool):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    if init_weights:
        model.init_weights()  # the frozen base from its pretrained init_cfg
    return model


def _load_full(model: nn.Module, full_checkpoint: str, config: str) -> None:
    state, _ = read_state_and_meta(full_checkpoint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f'{full_checkpoint} does not fit {config}: missing {missing[:8]}, '
                       f'unexpected {unexpected[:8]}')


def _save(out_path: str, state: dict, meta: dict) -> dict:
    out = dict(meta=meta, state_dict=OrderedDict((k, v.detach().cpu()) for k, v in state.items()))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    torch.save(out, out_path)
    return out


def extract_adapter_checkpoint(full_checkpoint: str, out_path: str, config: str = None,
                               contents: str = None) -> dict:
    """Write the adapter checkpoint of a full (mmengine) checkpoint to ``out_path``.

    ``contents`` defaults to 'trainable' with a ``config`` (needed to know which base weights
    are frozen) and to 'adapter' (vera_* / condlora_* keys only) without one.
    """
    contents = contents or ('trainable' if config else 'adapter')
    if contents not in CONTENTS:
        raise ValueError(f'--contents must be one of {CONTENTS}, got {contents!r}')
    meta = dict(source=os.path.abspath(full_checkpoint), adapter_checkpoint=contents)
    if config is None:
        if contents != 'adapter':
            raise ValueError("contents='trainable' needs the config, to know which base weights "
                             'the adapter froze')
        state, _ = read_state_and_meta(full_checkpoint)
        state = OrderedDict((k, v) for k, v in state.items() if is_adapter_key(k))
        if not state:
            raise ValueError(f'{full_checkpoint} contains no adapter keys (vera_* / condlora_*)')
        return _save(out_path, state, meta)
    model = _build_model(config, init_weights=False)
    _load_full(model, full_checkpoint, config)
    meta['adapters'] = adapter_configs(model)
    return _save(out_path, adapter_state_dict(model, contents), meta)


def compose_checkpoint(config: str, adapter_checkpoint: str, out_path: str) -> dict:
    """Pretrained base (the config's ``init_cfg``) + an adapter checkpoint -> a full checkpoint
    for ``tools/test.py`` / ``load_from`` (which do not run ``init_weights``)."""
    model = _build_model(config, init_weights=True)
    load_adapter_checkpoint(model, adapter_checkpoint, strict=True)
    meta = dict(source=os.path.abspath(adapter_checkpoint), composed_with=config)
    return _save(out_path, model.state_dict(), meta)


def merge_checkpoint(config: str, full_checkpoint: str, out_path: str) -> dict:
    """Build ``cfg.model``, load ``full_checkpoint``, merge and unload, save the state dict.

    The result has the keys of the same config without adapters (plain layers holding
    W0 + ΔW), so it loads into the base detector config for inference at no extra cost.
    """
    model = _build_model(config, init_weights=False)
    _load_full(model, full_checkpoint, config)
    merge_and_unload(model)
    meta = dict(source=os.path.abspath(full_checkpoint), merged_adapters=True)
    return _save(out_path, model.state_dict(), meta)

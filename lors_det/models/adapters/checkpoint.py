"""Adapter checkpoints: the trained state of an adapted model without its frozen pretrained base.

Two contents, written in ``meta['adapter_checkpoint']``:

* ``'adapter'``: only the adapter entries (VeRA b, d and the seed ``vera_prng_key``, plus A/B
  when ``save_projection``; CondLoRA θ).
* ``'trainable'``: everything *except* the frozen base parameters of adapted modules, i.e. the
  adapter entries plus the parts trained from scratch (a detector's neck and heads), base
  parameters left trainable and every buffer (BN statistics). This is what a detector needs to be
  rebuilt from its config (whose backbone ``init_cfg`` supplies the frozen pretrained weights).

Keys are exactly the full model's state-dict keys, so either file loads into the model built from
the same config; :func:`compose_checkpoint` turns one back into a full checkpoint.
CLI: ``tools/model_converters/adapter_ckpt.py``.
"""
import os
from collections import OrderedDict
from typing import Set, Tuple, Union

import torch
import torch.nn as nn

from ...checkpoint import load_checkpoint_file
from .base import AdapterBase, is_adapter_key

CONTENTS = ('adapter', 'trainable')


def frozen_base_keys(model: nn.Module) -> Set[str]:
    """State-dict keys of the frozen (``requires_grad=False``) base parameters of every module
    that owns an adapter (a ``PEFTBackbone``, or a model given to ``apply_adapter``)."""
    keys = set()
    for name, module in model.named_modules():
        if not any(isinstance(child, AdapterBase) for child in module.children()):
            continue
        prefix = f'{name}.' if name else ''
        # keep_vars: the values are the Parameters themselves; state-dict hooks (PEFTBackbone
        # drops its `module.` level) give the keys the checkpoint really has
        for key, value in module.state_dict(prefix=prefix, keep_vars=True).items():
            if (isinstance(value, nn.Parameter) and not value.requires_grad
                    and not is_adapter_key(key)):
                keys.add(key)
    return keys


def _selected_keys(model: nn.Module, state: dict, contents: str) -> list:
    if contents not in CONTENTS:
        raise ValueError(f'adapter checkpoint contents must be one of {CONTENTS}, got '
                         f'{contents!r}')
    if contents == 'adapter':
        return [k for k in state if is_adapter_key(k)]
    frozen = frozen_base_keys(model)
    return [k for k in state if k not in frozen]


def adapter_state_dict(model: nn.Module,
                       contents: str = 'adapter') -> 'OrderedDict[str, torch.Tensor]':
    """The entries of ``model.state_dict()`` an adapter checkpoint holds (keys unchanged)."""
    state = model.state_dict()
    keys = _selected_keys(model, state, contents)
    if not any(is_adapter_key(k) for k in keys):
        raise ValueError(f'{type(model).__name__} holds no adapter state (vera_* / condlora_* '
                         'keys); build it with an adapter config')
    return OrderedDict((k, state[k]) for k in keys)


def adapter_configs(model: nn.Module) -> dict:
    """``{module name: adapter config}`` of every adapter in ``model``."""
    return {name: module.config() for name, module in model.named_modules()
            if isinstance(module, AdapterBase)}


def save_adapter_checkpoint(model: nn.Module, path: str, meta: dict = None,
                            contents: str = 'adapter') -> dict:
    """Save the adapter checkpoint of ``model`` to ``path``; returns the saved dict."""
    state = adapter_state_dict(model, contents)
    checkpoint = dict(
        meta=dict(meta or {}, adapter_checkpoint=contents, adapters=adapter_configs(model)),
        state_dict=OrderedDict((k, v.detach().cpu()) for k, v in state.items()))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(checkpoint, path)
    return checkpoint


def _read(checkpoint: Union[str, dict]) -> Tuple[dict, dict]:
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint_file(checkpoint)
    if 'state_dict' in checkpoint:
        return checkpoint['state_dict'], checkpoint.get('meta') or {}
    return checkpoint, {}


def load_adapter_checkpoint(model: nn.Module, checkpoint: Union[str, dict],
                            strict: bool = True) -> Tuple[list, list]:
    """Load an adapter checkpoint (either contents) into ``model`` built from the same config.

    The frozen base must already hold its pretrained weights (``model.init_weights()``); frozen
    base entries of the file, if any (a full checkpoint), are ignored. With ``strict`` a missing
    or unexpected key raises a KeyError; returns (missing, unexpected) otherwise.
    """
    state, meta = _read(checkpoint)
    contents = meta.get('adapter_checkpoint')
    if contents is None:  # a plain state dict or a full checkpoint
        contents = 'adapter' if all(is_adapter_key(k) for k in state) else 'trainable'
    expected = set(adapter_state_dict(model, contents))
    frozen = frozen_base_keys(model)
    state = {k: v for k, v in state.items() if k not in frozen}
    # A seed-only VeRA checkpoint rebuilds A/B from its seed (VeRA._load_from_state_dict).
    seed_only = {k for k in expected if k.endswith(('.vera_A', '.vera_B'))
                 and k.rsplit('.', 1)[0] + '.vera_prng_key' in state}
    missing = sorted(expected - set(state) - seed_only)
    unexpected = sorted(set(state) - expected)
    if strict and (missing or unexpected):
        raise KeyError(f'adapter checkpoint ({contents}) does not fit {type(model).__name__}: '
                       f'missing {missing[:8]}, unexpected {unexpected[:8]}; build the model '
                       'from the config the checkpoint was trained with')
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return missing, unexpected


def adapter_checkpoint_path(full_checkpoint: str, suffix: str = '_adapter') -> str:
    """``work_dir/epoch_12.pth`` -> ``work_dir/epoch_12_adapter.pth``."""
    root, ext = os.path.splitext(full_checkpoint)
    return f'{root}{suffix}{ext or ".pth"}'


def _build_model(config: str, init_weights: bool):
    import lors_det  # noqa: F401  (registers the models and the checkpoint allow-list)
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
    state, _ = _read(full_checkpoint)
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
        state, _ = _read(full_checkpoint)
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
    from .applier import merge_and_unload

    model = _build_model(config, init_weights=False)
    _load_full(model, full_checkpoint, config)
    merge_and_unload(model)
    meta = dict(source=os.path.abspath(full_checkpoint), merged_adapters=True)
    return _save(out_path, model.state_dict(), meta)

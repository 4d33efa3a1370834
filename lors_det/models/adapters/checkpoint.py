"""Adapter checkpoints: the trained state of an adapted model without its frozen pretrained base.

Two contents, written in ``meta['adapter_checkpoint']``:

* ``'adapter'``: only the adapter entries (VeRA b, d and the seed ``vera_prng_key``, plus A/B
  when ``save_projection``; CondLoRA θ).
* ``'trainable'``: everything *except* the frozen base parameters of adapted modules, i.e. the
  adapter entries plus the parts trained from scratch (a detector's neck and heads), base
  parameters left trainable and every buffer (BN statistics). This is what a detector needs to be
  rebuilt from its config (whose backbone ``init_cfg`` supplies the frozen pretrained weights).

Keys are exactly the full model's state-dict keys, so either file loads into the model built from
the same config. From config and checkpoint files (extract, compose back into a full checkpoint,
merge): :mod:`lors_det.apis.adapter_checkpoints` and ``tools/model_converters/adapter_ckpt.py``.
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


def read_state_and_meta(checkpoint: Union[str, dict]) -> Tuple[dict, dict]:
    """``(state_dict, meta)`` of a checkpoint file (read safely) or dict."""
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
    state, meta = read_state_and_meta(checkpoint)
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

"""Model-level entry points: inject an adapter, freeze the base, merge / unmerge / unload."""
from typing import Sequence, Union

import torch.nn as nn
from mmdet.registry import MODELS

from .base import AdapterBase, freeze_base, iter_adapter_layers


def build_adapter(cfg: Union[dict, AdapterBase]) -> AdapterBase:
    """An adapter module from ``dict(type='VeRA' | 'CondLoRA', targets=[...], ...)``."""
    if isinstance(cfg, AdapterBase):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"adapter must be a dict with a `type` ('VeRA' or 'CondLoRA'), got {cfg!r}")
    adapter = MODELS.build(cfg)
    if not isinstance(adapter, AdapterBase):
        raise TypeError(f'adapter type {cfg["type"]!r} builds {type(adapter).__name__}, '
                        "not an adapter ('VeRA' or 'CondLoRA')")
    return adapter


def apply_adapter(model: nn.Module, adapter: Union[dict, AdapterBase],
                  trainable: Union[str, Sequence[str]] = (),
                  owner: nn.Module = None) -> AdapterBase:
    """Wrap the target layers of ``model``, then freeze everything but the adapter.

    The returned adapter module holds the shared state (VeRA A/B, CondLoRA θ). It is registered
    exactly once, as ``owner.adapter`` (``owner`` defaults to ``model``), so that ``.to()``,
    state dicts and the optimizer see it while the wrapped layers only keep a plain reference.
    ``trainable`` regexes (``re.search`` on parameter names of ``owner``) keep extra base
    parameters trainable, e.g. ``'norm'``.
    """
    owner = model if owner is None else owner
    if getattr(owner, 'adapter', None) is not None:
        raise ValueError(f'{type(owner).__name__} already has an `adapter` attribute '
                         f'({type(owner.adapter).__name__}); apply one adapter per model')
    adapter = build_adapter(adapter)
    adapter.inject(model)
    owner.adapter = adapter
    freeze_base(owner, trainable)
    return adapter


def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter into its base weight in place; returns the number of layers."""
    layers = list(iter_adapter_layers(model))
    for _, layer in layers:
        layer.merge()
    return len(layers)


def unmerge_adapters(model: nn.Module) -> int:
    """Undo :func:`merge_adapters` exactly (the pre-merge weights were kept at merge)."""
    layers = list(iter_adapter_layers(model))
    for _, layer in layers:
        layer.unmerge()
    return len(layers)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every wrapper by a plain layer holding W0 + ΔW and drop the adapter modules.

    The result has the architecture and state-dict keys of the model before injection.
    """
    for name, layer in list(iter_adapter_layers(model)):
        plain = layer.to_base_layer()
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, plain)
    for module in list(model.modules()):
        for child_name, child in list(module._modules.items()):
            if isinstance(child, AdapterBase):
                module._modules[child_name] = None
    return model


def count_trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

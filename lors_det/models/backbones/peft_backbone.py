"""PEFTBackbone: any registered backbone with a VeRA / CondLoRA adapter and a frozen base."""
from typing import Sequence, Union

import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.model import BaseModule

from ..adapters import (apply_adapter, freeze_base, is_adapter_key, iter_adapter_layers,
                        merge_adapters, merge_and_unload, unmerge_adapters)

_INNER = 'module'
_OWN_CHILDREN = (_INNER, 'adapter')


def _flatten_state_dict_keys(module, state_dict, prefix, local_metadata):
    """``<prefix>module.<key>`` -> ``<prefix><key>``: the keys of the unwrapped backbone."""
    inner = prefix + _INNER + '.'
    for key in [k for k in state_dict if k.startswith(prefix)]:
        value = state_dict.pop(key)  # re-insert every key to keep them in module order
        state_dict[prefix + key[len(inner):] if key.startswith(inner) else key] = value
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        for key in [k for k in metadata if k.startswith(inner) or k == inner[:-1]]:
            value = metadata.pop(key)
            if key != inner[:-1]:
                metadata[prefix + key[len(inner):]] = value


def _nest_state_dict_keys(module, state_dict, prefix, local_metadata, strict, missing_keys,
                          unexpected_keys, error_msgs):
    """Inverse of :func:`_flatten_state_dict_keys`; also accepts already nested keys."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        if rest.split('.', 1)[0] not in _OWN_CHILDREN:
            state_dict[prefix + _INNER + '.' + rest] = state_dict.pop(key)


def _preview(names, limit=4) -> str:
    return f'{names[:limit]}{" ..." if len(names) > limit else ""}'


@MODELS.register_module()
class PEFTBackbone(BaseModule):
    """Builds a backbone, injects a VeRA / CondLoRA adapter and freezes the rest.

    The wrapped layers keep their ``weight`` / ``bias`` keys and this wrapper's state dict drops
    the ``module.`` level, so the state dict of ``PEFTBackbone`` equals the plain backbone's plus
    the adapter keys: pretrained ``init_cfg`` of the inner backbone, ``load_from`` of a vanilla
    detector and merged checkpoints all load unchanged. Shared adapter state is registered once,
    as ``adapter``.

    Args:
        module (dict | nn.Module): the backbone, e.g. ``dict(type='ResNet', depth=50, ...)``.
        adapter (dict, optional): ``dict(type='VeRA' | 'CondLoRA', targets=[regex, ...],
            rank=..., ...)``. None keeps the whole backbone frozen (a linear-probe baseline).
        trainable (str | list[str]): regexes (``re.search`` on parameter names such as
            ``module.layer4.0.bn1.weight``) of base parameters left trainable.
        init_cfg (dict, optional): init config of the wrapper itself (the inner backbone keeps
            its own, e.g. ``dict(type='Pretrained', checkpoint=...)``).
    """

    def __init__(self, module: Union[dict, nn.Module], adapter: dict = None,
                 trainable: Union[str, Sequence[str]] = (), init_cfg: dict = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # ConfigDict: some backbones read their init_cfg by attribute (Swin's init_cfg.checkpoint)
        self.module = MODELS.build(ConfigDict(module)) if isinstance(module, dict) else module
        clash = {n for n, _ in self.module.named_children()} & set(_OWN_CHILDREN)
        if clash:
            raise ValueError(f'{type(self.module).__name__} has children named {sorted(clash)}, '
                             'which PEFTBackbone reserves')
        if adapter is None:
            self.adapter = None
            freeze_base(self, trainable)
        else:
            apply_adapter(self.module, adapter, trainable=trainable, owner=self)
        self._check_frozen_stages()
        self.register_state_dict_post_hook(_flatten_state_dict_keys)
        self.register_load_state_dict_pre_hook(_nest_state_dict_keys)

    def _check_frozen_stages(self) -> None:
        """Refuse adapters / ``trainable`` parameters that ``frozen_stages`` would freeze.

        mmdet backbones re-run ``_freeze_stages()`` on every ``train()``; it sets
        ``requires_grad=False`` on everything inside the frozen stages, which would silently
        stop the VeRA vectors of layers there from training (CondLoRA θ live on the adapter, but
        a CondLoRA target in a frozen stage is as surely a config mistake). We run the
        backbone's own ``_freeze_stages()`` on a fully trainable copy of the flags to see what
        it freezes, then restore every flag and train/eval mode.
        """
        freeze = getattr(self.module, '_freeze_stages', None)
        if freeze is None:
            return
        params = dict(self.named_parameters())
        wanted = {name for name, p in params.items() if p.requires_grad}
        layer_weights = {f'{_INNER}.{name}.weight': name
                         for name, _ in iter_adapter_layers(self.module)}
        grad_flags = {name: p.requires_grad for name, p in params.items()}
        modes = [(m, m.training) for m in self.modules()]
        try:
            for p in params.values():
                p.requires_grad_(True)
            freeze()
            frozen = {name for name, p in params.items() if not p.requires_grad}
        finally:
            for name, p in params.items():
                p.requires_grad_(grad_flags[name])
            for module, mode in modes:
                module.training = mode
        hit_layers = sorted({layer for key, layer in layer_weights.items() if key in frozen})
        hit_params = sorted(name for name in wanted & frozen
                            if not is_adapter_key(name))  # `trainable` base parameters
        if not hit_layers and not hit_params:
            return
        stages = getattr(self.module, 'frozen_stages', '?')
        what = []
        if hit_layers:
            what.append(f'adapter.targets {_preview(hit_layers)}, whose adapters would then '
                        'silently never train')
        if hit_params:
            what.append(f'`trainable` parameters {_preview(hit_params)}')
        raise ValueError(
            f'{type(self.module).__name__}(frozen_stages={stages}) freezes '
            f'{" and ".join(what)}. Set frozen_stages=-1 in the backbone config (PEFTBackbone '
            'already freezes the base weights) or exclude these layers from adapter.targets / '
            'trainable.')

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__['_modules'].get(_INNER)
            if inner is None:
                raise
            return getattr(inner, name)  # e.g. out_indices, num_features of the backbone

    def forward(self, x):
        return self.module(x)

    def merge(self) -> int:
        """Fold the adapters into the base weights (reversible with :meth:`unmerge`)."""
        return merge_adapters(self.module)

    def unmerge(self) -> int:
        return unmerge_adapters(self.module)

    def merge_and_unload(self) -> 'PEFTBackbone':
        """Plain layers with merged weights, no adapter: the plain backbone's state dict."""
        merge_and_unload(self)
        self.adapter = None
        return self

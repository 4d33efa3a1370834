"""Shared machinery of the backbone adapters: target search, layer wrapping, merge/unmerge.

A wrapped layer *is* an ``nn.Linear`` / ``nn.Conv2d`` (direct subclass, so mmengine's
``layer='Conv2d'`` initialisers and Swin's ``isinstance(m, nn.Linear)`` still reach its base
weight) that adopts the base layer's own ``weight`` / ``bias`` Parameters: state-dict keys stay
``<layer>.weight`` so pretrained checkpoints keep loading. Adapter state lives in raw Parameters /
buffers whose names start with ``vera_`` or ``condlora_``; state shared by many layers is
registered once on the adapter module (:class:`AdapterBase`) and each layer only keeps a plain,
non-registered reference to it.
"""
import re
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

# Every state-dict key of adapter state has a path component starting with one of these.
ADAPTER_KEY_PATTERN = re.compile(r'(^|\.)(vera|condlora)_')

# Layer classes whose forward is exactly F.linear / Conv2d._conv_forward (the mmcv and timm
# wrappers only add empty-tensor / torchscript handling). Other subclasses (timm Conv2dSame,
# nn.MultiheadAttention's out_proj, ...) change or bypass forward, so wrapping them would be
# silently wrong.
SUPPORTED_LINEAR = frozenset({
    'torch.nn.modules.linear.Linear',
    'mmcv.cnn.bricks.wrappers.Linear',
    'timm.layers.linear.Linear',
})
SUPPORTED_CONV = frozenset({
    'torch.nn.modules.conv.Conv2d',
    'mmcv.cnn.bricks.wrappers.Conv2d',
})

FORWARD_MODES = ('merged', 'factorised')


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key holds adapter state (lambda vectors, theta, VeRA A/B, seed)."""
    return ADAPTER_KEY_PATTERN.search(key) is not None


def _class_path(module: nn.Module) -> str:
    return f'{type(module).__module__}.{type(module).__qualname__}'


def weight_matrix_shape(layer: nn.Module) -> Tuple[int, int]:
    """(d_out, d_in) of a layer's weight seen as a matrix; convs flatten (in/groups, kh, kw)."""
    weight = layer.weight
    return weight.shape[0], weight[0].numel()


# --------------------------------------------------------------------------------------------
# Target search
# --------------------------------------------------------------------------------------------
def normalize_targets(targets, allowed_overrides: Sequence[str]) -> List[dict]:
    """``targets`` as a list of ``dict(pattern=regex, **overrides)``.

    Accepts regex strings or mmpretrain-style dicts ``dict(type=regex, **overrides)``.
    """
    if isinstance(targets, (str, dict)):
        targets = [targets]
    if not targets:
        raise ValueError('adapter.targets is empty: give at least one module-name regex, '
                         "e.g. targets=[r'layer[2-4]\\.\\d+\\.conv[123]']")
    normalized = []
    for target in targets:
        if isinstance(target, str):
            target = dict(pattern=target)
        elif isinstance(target, dict):
            target = dict(target)
            if 'type' in target:
                target['pattern'] = target.pop('type')
            if 'pattern' not in target:
                raise ValueError(f'adapter.targets entry {target} needs a `type` (regex) key')
        else:
            raise TypeError(f'adapter.targets entries must be str or dict, got {target!r}')
        unknown = set(target) - {'pattern'} - set(allowed_overrides)
        if unknown:
            raise ValueError(f'adapter.targets entry {target} has unknown override(s) '
                             f'{sorted(unknown)}; allowed: {list(allowed_overrides)}')
        try:
            re.compile(target['pattern'])
        except re.error as err:
            raise ValueError(f'adapter.targets pattern {target["pattern"]!r} is not a valid '
                             f'regex: {err}') from err
        normalized.append(target)
    return normalized


def _name_matches(pattern: str, name: str) -> bool:
    # mmpretrain convention: full regex match, or the name ends with the pattern at a
    # path-component boundary (so 'qkv' matches 'stages.0.blocks.1.attn.w_msa.qkv').
    return (re.fullmatch(pattern, name) is not None or name == pattern
            or name.endswith('.' + pattern))


def find_targets(model: nn.Module, targets: List[dict]) -> List[Tuple[str, nn.Module, dict]]:
    """(name, layer, overrides) for every Linear/Conv2d matched by a target, in model order.

    A layer matched by several targets takes the overrides of the first. Raises if a pattern
    matches no wrappable layer, or matches a Linear/Conv2d subclass we cannot wrap faithfully.
    """
    named = [(name, module) for name, module in model.named_modules() if name]
    chosen: Dict[str, dict] = {}
    for target in targets:
        pattern = target['pattern']
        hits = [(name, module) for name, module in named if _name_matches(pattern, name)]
        layers = [(n, m) for n, m in hits if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not layers:
            hint = (f' (it matched only non-Linear/Conv2d modules: '
                    f'{[n for n, _ in hits][:5]})' if hits else '')
            examples = [n for n, m in named if isinstance(m, (nn.Linear, nn.Conv2d))][:6]
            raise ValueError(
                f"adapter target '{pattern}' matches no nn.Linear / nn.Conv2d in "
                f'{type(model).__name__}{hint}. Module names look like {examples}')
        for name, module in layers:
            if isinstance(module, AdapterLayerMixin):
                raise ValueError(f'{name} is already wrapped by {type(module).__name__}; '
                                 'apply one adapter per model')
            path = _class_path(module)
            if path not in SUPPORTED_LINEAR | SUPPORTED_CONV:
                raise ValueError(
                    f'adapter target {pattern!r} matches {name} of class {path}, whose forward is '
                    f'not a plain linear/conv; supported classes: '
                    f'{sorted(SUPPORTED_LINEAR | SUPPORTED_CONV)}. Narrow the pattern.')
            chosen.setdefault(name, {k: v for k, v in target.items() if k != 'pattern'})
    return [(name, module, chosen[name]) for name, module in named if name in chosen]


def depth_free_role(model: nn.Module, name: str) -> str:
    """The module path with the index of its innermost repeated block removed.

    A numeric path component is a block index when its container holds children of a single
    class (ResNet ``layer3``, Swin ``stages.2.blocks``, a ViT's ``blocks``); only the innermost
    one is dropped, so stage indices survive: ``stages.2.blocks.3.attn.w_msa.qkv`` ->
    ``stages.2.blocks.attn.w_msa.qkv``, ``layer3.4.conv2`` -> ``layer3.conv2``,
    ``layer3.0.downsample.0`` -> ``layer3.downsample.0``. The layer's own name is never dropped.
    """
    parts = name.split('.')
    drop = None
    container = model
    for i, part in enumerate(parts[:-1]):
        if part.isdigit() and len({type(c) for c in container.children()}) == 1:
            drop = i
        container = getattr(container, part)
    if drop is None:
        return name
    return '.'.join(parts[:drop] + parts[drop + 1:])


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# --------------------------------------------------------------------------------------------
# Layer wrappers
# --------------------------------------------------------------------------------------------
_CONV_ATTRS = ('in_channels', 'out_channels', 'kernel_size', 'stride', 'padding', 'dilation',
               'transposed', 'output_padding', 'groups', 'padding_mode',
               '_reversed_padding_repeated_twice')


class AdapterLayerMixin:
    """Common behaviour of the adapter wrappers; mixed in before nn.Linear / nn.Conv2d.

    Subclasses implement ``get_delta_weight()`` (ΔW in the weight's own shape, fp32) and
    ``_factorised_delta(x)`` (the adapter branch without forming ΔW).
    """

    adapter_param_names: Tuple[str, ...] = ()

    def _adopt_base(self, base: nn.Module, adapter: nn.Module, forward_mode: str,
                    dropout: float) -> None:
        nn.Module.__init__(self)  # no fresh weight allocation: adopt the base Parameters
        if isinstance(base, nn.Conv2d):
            for attr in _CONV_ATTRS:
                setattr(self, attr, getattr(base, attr))
        else:
            self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.base_class = type(base)
        if forward_mode not in FORWARD_MODES:
            raise ValueError(f'forward mode must be one of {FORWARD_MODES}, got {forward_mode!r}')
        if dropout and forward_mode == 'merged':
            raise ValueError('adapter dropout needs the factorised forward (a merged weight '
                             "cannot drop inputs); set conv_forward/linear_forward='factorised'")
        if forward_mode == 'factorised' and getattr(base, 'groups', 1) != 1:
            raise ValueError(f'{type(base).__name__} with groups={base.groups}: the factorised '
                             "adapter forward needs groups=1; use conv_forward='merged'")
        self.forward_mode = forward_mode
        self.dropout = float(dropout)
        self.merged = False
        # Plain attribute, not a submodule: shared state is registered once, on its owner.
        object.__setattr__(self, '_adapter', adapter)

    # -- forward ------------------------------------------------------------------------------
    def _base_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if isinstance(self, nn.Conv2d):
            return self._conv_forward(x, weight, self.bias)
        return F.linear(x, weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self._base_forward(x, self.weight)
        if self.forward_mode == 'merged':
            delta = self.get_delta_weight().to(self.weight.dtype)
            return self._base_forward(x, self.weight + delta)
        result = self._base_forward(x, self.weight)
        adapter_dtype = self._adapter_dtype()
        x = x.to(adapter_dtype)
        if self.dropout:
            x = F.dropout(x, self.dropout, self.training)
        return result + self._factorised_delta(x).to(result.dtype)

    def _adapter_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def get_delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def _factorised_delta(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _as_weight_shape(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.reshape(self.weight.shape)

    def _weight_matrix(self) -> torch.Tensor:
        return self.weight.reshape(self.weight.shape[0], -1)

    # -- merge --------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight (W0 += ΔW); forward then costs a plain layer."""
        if self.merged:
            return
        delta = self.get_delta_weight()
        # Keep W0 itself: unmerge is then exact, and CondLoRA's ΔW (a function of W0) is never
        # recomputed from the already merged weight.
        self.register_buffer('_unmerged_weight', self.weight.detach().clone(), persistent=False)
        self.weight.add_(delta.to(self.weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        self.weight.copy_(self._unmerged_weight)
        del self._buffers['_unmerged_weight']
        self.merged = False

    @torch.no_grad()
    def to_base_layer(self) -> nn.Module:
        """A plain layer of the original class holding W0 + ΔW (the same Parameter objects)."""
        self.merge()
        if isinstance(self, nn.Conv2d):
            plain = self.base_class(
                self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                padding=self.padding, dilation=self.dilation, groups=self.groups,
                bias=self.bias is not None, padding_mode=self.padding_mode, device='meta')
        else:
            plain = self.base_class(self.in_features, self.out_features,
                                    bias=self.bias is not None, device='meta')
        plain.weight = self.weight
        plain.bias = self.bias
        plain.train(self.training)
        del self._buffers['_unmerged_weight']
        self.merged = False  # this wrapper is discarded; its weight now holds W0 + ΔW
        return plain

    # -- state dict ---------------------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.merged:
            # A checkpoint always holds (W0, adapter state): saving W0 + ΔW next to the adapter
            # would apply ΔW twice once loaded into an unmerged model.
            weight = self._unmerged_weight
            destination[prefix + 'weight'] = weight if keep_vars else weight.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.merged:
            raise RuntimeError(f'{type(self).__name__} at {prefix[:-1] or "<root>"} is merged: '
                               'call unmerge() (PEFTBackbone.unmerge()) before loading weights')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, forward={self.forward_mode}, merged={self.merged}'


# --------------------------------------------------------------------------------------------
# Adapter (shared state + injection)
# --------------------------------------------------------------------------------------------
class AdapterBase(nn.Module):
    """Owns an adapter's shared state and injects its layer wrappers into a model.

    Subclasses set ``layer_overrides`` (per-target keys) and implement ``_prepare`` (allocate
    shared state for the matched layers) and ``_wrap`` (build one wrapper).
    """

    layer_overrides: Tuple[str, ...] = ()

    def __init__(self, targets, conv_forward: str = 'merged',
                 linear_forward: str = 'factorised') -> None:
        super().__init__()
        for key, mode in (('conv_forward', conv_forward), ('linear_forward', linear_forward)):
            if mode not in FORWARD_MODES:
                raise ValueError(f'adapter.{key} must be one of {FORWARD_MODES}, got {mode!r}')
        self.targets = normalize_targets(targets, self.layer_overrides)
        self.conv_forward = conv_forward
        self.linear_forward = linear_forward
        self.wrapped_names: List[str] = []

    def forward_mode_for(self, layer: nn.Module) -> str:
        return self.conv_forward if isinstance(layer, nn.Conv2d) else self.linear_forward

    def inject(self, model: nn.Module) -> List[str]:
        """Replace the matched layers of ``model`` by wrappers; returns their names."""
        if self.wrapped_names:
            raise RuntimeError(f'{type(self).__name__} was already injected into a model')
        found = find_targets(model, self.targets)
        self._prepare(model, found)
        for name, layer, overrides in found:
            set_submodule(model, name, self._wrap(name, layer, overrides))
        self.wrapped_names = [name for name, _, _ in found]
        return self.wrapped_names

    def _prepare(self, model: nn.Module, found: List[Tuple[str, nn.Module, dict]]) -> None:
        raise NotImplementedError

    def _wrap(self, name: str, layer: nn.Module, overrides: dict) -> nn.Module:
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments, for adapter-only checkpoints."""
        raise NotImplementedError


def iter_adapter_layers(model: nn.Module):
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayerMixin):
            yield name, module


def adapter_parameters(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """(name, Parameter) of every adapter parameter in ``model`` (shared ones once)."""
    return [(name, p) for name, p in model.named_parameters() if is_adapter_key(name)]


def freeze_base(model: nn.Module, trainable: Union[str, Sequence[str]] = ()) -> None:
    """requires_grad only for adapter parameters and names matching a ``trainable`` regex."""
    patterns = [trainable] if isinstance(trainable, str) else list(trainable)
    for pattern in patterns:
        if not any(re.search(pattern, n) for n, _ in model.named_parameters()):
            raise ValueError(f'trainable pattern {pattern!r} matches no parameter of '
                             f'{type(model).__name__}')
    for name, param in model.named_parameters():
        param.requires_grad_(is_adapter_key(name)
                             or any(re.search(p, name) for p in patterns))

"""LORS on any stack of same-shape layers of an mmdet model, chosen by config.

A *stack* is a ``ModuleList`` of layers with the same structure (Sparse R-CNN's
``roi_head.bbox_head`` of 6 ``DIIHead``, a DETR ``decoder.layers`` / ``encoder.layers``). In
every layer, the ``nn.Linear`` modules whose path (relative to the layer) matches a ``static``
target become :class:`LowRankResidualLinear` (LORS^T), those matching an ``adaptive`` target
become :class:`AdaptiveLowRankGenerator` (LORS^A). The shared dense modules are owned once, by
a :class:`LORSSharedStack` registered on the stack's parent as ``lors_shared_<stack name>``
(e.g. ``decoder.lors_shared_layers.cross_attn.value_proj``); every layer's LORS module holds a
plain reference to its shared module and owns its private terms.

Init: mmdet's own ``init_weights`` runs on a stack whose layer 0 holds the shared modules
themselves (the others throwaway copies), so each shared module gets exactly the init the
stock code gives that layer (DETR's zero sampling offsets with the grid bias, DIIHead's
xavier); then the LORS modules go back and their private terms are reset (zero residual).
:func:`apply_lors` makes the model's ``init_weights`` do this.
"""
import contextlib
import copy
import re
import types
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .adaptive_lowrank_generator import AdaptiveLowRankGenerator
from .lowrank_linear import LowRankResidualLinear

LORS_LAYERS = (LowRankResidualLinear, AdaptiveLowRankGenerator)
# modules that read their children's ``.weight`` directly instead of calling them
_READS_CHILD_WEIGHTS = (nn.MultiheadAttention, )


def _parent_and_name(root: nn.Module, path: str) -> Tuple[nn.Module, str]:
    parent_path, _, name = path.rpartition('.')
    return (root.get_submodule(parent_path) if parent_path else root), name


def _set_nested(root: nn.Module, path: str, module: nn.Module) -> None:
    """``root.<path> = module``, creating empty ``nn.Module`` containers on the way."""
    *parents, name = path.split('.')
    node = root
    for part in parents:
        if not hasattr(node, part):
            node.add_module(part, nn.Module())
        node = getattr(node, part)
    node.add_module(name, module)


def _per_layer(value, num_layers: int, key: str) -> list:
    """One value for every layer, or a list with one entry per layer (so per-term ranks for
    every layer are written ``[[16, 8]] * num_layers``)."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ValueError(f'{key}: one value, or a list with one entry per layer '
                             f'({num_layers}), got {list(value)}')
        return list(value)
    return [value] * num_layers


class LORSSharedStack(nn.Module):
    """The shared modules of one stack (owned here once) and the init of the stack.

    Submodules mirror the target paths inside a layer (``cross_attn.value_proj``); the stack
    itself is a plain reference.
    """

    def __init__(self, stack: nn.ModuleList, container: str):
        super().__init__()
        object.__setattr__(self, 'stack', stack)  # plain reference: owned by its parent
        self.container = container
        self.targets: List[str] = []

    def add(self, path: str, shared: nn.Module) -> None:
        _set_nested(self, path, shared)
        self.targets.append(path)

    @contextlib.contextmanager
    def stock_layers(self):
        """Within: plain layers in the stack (layer 0: the shared modules themselves, the other
        layers copies of them). Afterwards the LORS modules are back, private terms reset."""
        saved = []
        for index, layer in enumerate(self.stack):
            for path in self.targets:
                parent, name = _parent_and_name(layer, path)
                saved.append((parent, name, getattr(parent, name)))
                shared = self.get_submodule(path)
                setattr(parent, name, shared if index == 0 else copy.deepcopy(shared))
        try:
            yield
        finally:
            for parent, name, lors_module in saved:
                setattr(parent, name, lors_module)
                lors_module.reset_parameters()

    def extra_repr(self) -> str:
        return f'container={self.container!r}, layers={len(self.stack)}'


def _stack_of(model: nn.Module, container: str, key: str) -> nn.ModuleList:
    try:
        stack = model.get_submodule(container)
    except AttributeError:
        raise ValueError(f'{key}: {container!r} is not a module of {type(model).__name__}')
    if not isinstance(stack, (nn.ModuleList, nn.Sequential)) or len(stack) < 2:
        size = len(stack) if hasattr(stack, '__len__') else 0
        raise ValueError(f'{key}: {container!r} must be a ModuleList of at least 2 layers, got '
                         f'{type(stack).__name__} of {size}')
    return stack


def _matched_linears(layer: nn.Module, patterns: Sequence[str], key: str) -> List[str]:
    """Paths of the ``nn.Linear`` in ``layer`` matched (``re.fullmatch``) by a pattern; every
    pattern must match at least one."""
    if isinstance(patterns, str) or not patterns:
        raise ValueError(f'{key}: a non-empty list of regexes, got {patterns!r}')
    linears = [name for name, module in layer.named_modules()
               if isinstance(module, nn.Linear) and name]
    matched = []
    for pattern in patterns:
        hits = [name for name in linears if re.fullmatch(pattern, name)]
        if not hits:
            raise ValueError(f'{key}: {pattern!r} matches no nn.Linear of the layer; its '
                             f'Linears are {linears}')
        matched += [name for name in hits if name not in matched]
    for name in matched:
        parent, _ = _parent_and_name(layer, name)
        if isinstance(parent, _READS_CHILD_WEIGHTS):
            raise ValueError(f'{key}: {name!r} is read as a weight by its '
                             f'{type(parent).__name__} (it never calls it), so it cannot be '
                             'replaced by a LORS layer')
    return matched


def _check_same_shape(stack: nn.ModuleList, path: str, key: str) -> nn.Linear:
    first = stack[0].get_submodule(path)
    shape = (first.in_features, first.out_features, first.bias is not None)
    for index, layer in enumerate(stack):
        try:
            module = layer.get_submodule(path)
        except AttributeError:
            raise ValueError(f'{key}: layer {index} has no {path!r} (layer 0 has)')
        other = (getattr(module, 'in_features', None), getattr(module, 'out_features', None),
                 getattr(module, 'bias', None) is not None)
        if not isinstance(module, nn.Linear) or other != shape:
            raise ValueError(
                f'{key}: {path!r} is Linear(in={shape[0]}, out={shape[1]}, bias={shape[2]}) '
                f'in layer 0 but {type(module).__name__}(in={other[0]}, out={other[1]}, '
                f'bias={other[2]}) in layer {index}: a stack shares same-shape layers only')
    return first


def _checked_options(kind: str, cfg: dict, num_layers: int, key: str) -> dict:
    """``cfg`` of one kind (``static`` / ``adaptive``) with per-layer ``rank`` / ``num_terms``."""
    allowed = {'targets', 'rank', 'num_terms'} | (
        {'zero_init'} if kind == 'static' else {'blocks'})
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f'{key}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}')
    if 'rank' not in cfg:
        raise ValueError(f'{key}.rank: required')
    if kind == 'adaptive' and 'blocks' not in cfg:
        raise ValueError(f'{key}.blocks: required, the (rows, cols) of the generated matrices '
                         'in output order')
    return dict(cfg, rank=_per_layer(cfg['rank'], num_layers, f'{key}.rank'),
                num_terms=_per_layer(cfg.get('num_terms', 1), num_layers, f'{key}.num_terms'))


def _lors_module(kind: str, shared: nn.Linear, cfg: dict, index: int) -> nn.Module:
    """Layer ``index``'s LORS module for ``shared``."""
    if kind == 'static':
        return LowRankResidualLinear(shared, rank=cfg['rank'][index],
                                     num_terms=cfg['num_terms'][index],
                                     bias=shared.bias is not None,
                                     zero_init=cfg.get('zero_init', 'B'))
    return AdaptiveLowRankGenerator(shared, cfg['blocks'], rank=cfg['rank'][index],
                                    num_terms=cfg['num_terms'][index])


def share_stack(model: nn.Module, container: str, static: Optional[dict] = None,
                adaptive: Optional[dict] = None, key: str = 'stacks[0]') -> LORSSharedStack:
    """Apply LORS to the stack ``model.<container>``; returns its :class:`LORSSharedStack`.

    Args:
        container: path of the stack, e.g. ``'decoder.layers'``.
        static: LORS^T, ``dict(targets=[regex, ...], rank=..., num_terms=1, zero_init='B')``;
            ``rank`` / ``num_terms``: one value, or a list with one per layer (a rank may be a
            list with one per term).
        adaptive: LORS^A, ``dict(targets=[regex, ...], blocks=[(rows, cols), ...], rank=...,
            num_terms=1)``; ``blocks`` tile the generator's output.
        key: how errors name this stack's config.
    """
    stack = _stack_of(model, container, f'{key}.container')
    if not static and not adaptive:
        raise ValueError(f'{key}: give `static` (LORS^T) and/or `adaptive` (LORS^A)')
    parent, attr = _parent_and_name(model, container)
    owner_name = f'lors_shared_{attr}'
    if hasattr(parent, owner_name):
        raise ValueError(f'{key}: {container!r} is already shared ({owner_name} exists)')

    plans = {}  # target path -> (kind, checked options, kind key)
    for kind, cfg in (('static', static), ('adaptive', adaptive)):
        if not cfg:
            continue
        kind_key = f'{key}.{kind}'
        cfg = _checked_options(kind, dict(cfg), len(stack), kind_key)
        for path in _matched_linears(stack[0], cfg['targets'], f'{kind_key}.targets'):
            if path in plans:
                raise ValueError(f'{key}: {path!r} is matched by both static and adaptive '
                                 'targets')
            plans[path] = (kind, cfg, kind_key)

    owner = LORSSharedStack(stack, container)
    for path, (kind, cfg, kind_key) in plans.items():
        shared = copy.deepcopy(_check_same_shape(stack, path, f'{kind_key}.targets'))
        owner.add(path, shared)
        for index, layer in enumerate(stack):
            try:
                lors_module = _lors_module(kind, shared, cfg, index)
            except ValueError as err:
                raise ValueError(f'{kind_key}.{err} (layer {index}, {path})') from None
            layer_parent, name = _parent_and_name(layer, path)
            setattr(layer_parent, name, lors_module)
    parent.add_module(owner_name, owner)
    return owner


def _init_weights_with_lors(self) -> None:
    """The model's own ``init_weights`` on stock layers, then the LORS modules back."""
    owners = [m for m in self.modules() if isinstance(m, LORSSharedStack)]
    with contextlib.ExitStack() as stack:
        for owner in owners:
            stack.enter_context(owner.stock_layers())
        type(self).init_weights(self)


def apply_lors(model: nn.Module, stacks: Sequence[dict]) -> nn.Module:
    """Share every stack of ``stacks`` (see :func:`share_stack`) in place; ``model``'s
    ``init_weights`` then initialises the shared modules as the stock model initialises the
    first layer of each stack, and the private terms at zero residual."""
    if isinstance(stacks, dict) or not stacks:
        raise ValueError(f'stacks: a non-empty list of dict(container=..., static=..., '
                         f'adaptive=...), got {stacks!r}')
    for index, cfg in enumerate(stacks):
        cfg = dict(cfg)
        key = f'stacks[{index}]'
        if 'container' not in cfg:
            raise ValueError(f'{key}.container: required (e.g. "decoder.layers")')
        unknown = set(cfg) - {'container', 'static', 'adaptive'}
        if unknown:
            raise ValueError(f'{key}: unknown keys {sorted(unknown)}; allowed '
                             "['adaptive', 'container', 'static']")
        share_stack(model, cfg['container'], cfg.get('static'), cfg.get('adaptive'), key)
    # bound to the instance: deepcopy rebinds it to the copy
    model.init_weights = types.MethodType(_init_weights_with_lors, model)
    return model


@torch.no_grad()
def fold_lors_stacks(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict of the stock model: every LORS module as a plain ``weight`` / ``bias``
    (``W_shared + B A``; the generator's affine residual added to its weight and bias), the
    shared owners and private factors dropped."""
    state = model.state_dict()
    owners = [name for name, m in model.named_modules() if isinstance(m, LORSSharedStack)]
    lors_layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LORS_LAYERS)]
    drop = tuple(f'{name}.' for name in owners) + tuple(f'{name}.' for name, _ in lors_layers)
    folded = {k: v for k, v in state.items() if not k.startswith(drop)}
    for name, module in lors_layers:
        weight, bias = module.fold()
        folded[f'{name}.weight'] = weight
        if bias is not None:
            folded[f'{name}.bias'] = bias
    return folded


def count_stack_parameters(model: nn.Module) -> Dict[str, Dict[str, int]]:
    """Per shared stack: ``shared`` (its owner), ``private`` (the LORS modules' own terms) and
    ``other`` (the layers' parameters that are not shared: norms, attention, ...)."""
    counts = {}
    for owner in (m for m in model.modules() if isinstance(m, LORSSharedStack)):
        shared = sum(p.numel() for p in owner.parameters())
        private = sum(p.numel() for m in owner.stack.modules() if isinstance(m, LORS_LAYERS)
                      for p in m.parameters())
        layers = sum(p.numel() for p in owner.stack.parameters())
        counts[owner.container] = dict(shared=shared, private=private, other=layers - private)
    return counts

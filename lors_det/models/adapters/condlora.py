"""CondLoRA: LoRA factors conditioned on the frozen weight (Kim et al., LREC-COLING 2024).

For a weight W0 seen as the matrix M0 (d_out x d_in; convs flatten in/groups*kh*kw):
A = θ_Aᵀ M0 (r x d_in), B = M0 θ_B (d_out x r), ΔW = (α/r) B A = (α/r) M0 θ_B θ_Aᵀ M0.
One pair θ_A (d_out x r, kaiming-uniform a=√5 on its r x d_out view) and θ_B (d_in x r, zeros)
is shared by a *group* of layers across depth, so the trainable count does not grow with depth.
This is the paper's dimensionally consistent form; the official code's A = θ W0ᵀ only works for
square W0, and Swin / ResNet layers are rectangular.

Groups (``group_by``): 'role_shape' (default) keys a layer by (its path without the block index,
weight shape, rank), i.e. (stage, role, shape) for ResNet / Swin; 'shape' by (shape, rank); any
other string is a regex whose capture groups (``re.search`` on the layer name) replace the role.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.logging import print_log

from .base import AdapterBase, AdapterLayerMixin, depth_free_role, weight_matrix_shape


class _CondLoRALayer(AdapterLayerMixin):

    def _init_condlora(self, base, adapter: 'CondLoRA', group: str, rank: int, alpha: float,
                       dropout: float, forward_mode: str) -> None:
        self._adopt_base(base, adapter, forward_mode, dropout)
        self.d_out, self.d_in = weight_matrix_shape(base)
        self.group = group
        self.rank = int(rank)
        self.scaling = float(alpha) / self.rank

    def _thetas(self) -> Tuple[torch.Tensor, torch.Tensor]:
        adapter = self._adapter
        return adapter.condlora_theta_A[self.group], adapter.condlora_theta_B[self.group]

    def _adapter_dtype(self) -> torch.dtype:
        return self._adapter.condlora_theta_A[self.group].dtype

    def _factors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(A, B) = (θ_Aᵀ M0, M0 θ_B), recomputed from the current W0 on every call."""
        theta_a, theta_b = self._thetas()
        matrix = self._weight_matrix().to(theta_a.dtype)
        return theta_a.t() @ matrix, matrix @ theta_b

    def get_delta_weight(self) -> torch.Tensor:
        factor_a, factor_b = self._factors()
        return self._as_weight_shape(self.scaling * (factor_b @ factor_a))

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, condlora_group={self.group}, rank={self.rank}'


class CondLoRALinear(_CondLoRALayer, nn.Linear):
    """nn.Linear with a CondLoRA branch; θ lives on the owning :class:`CondLoRA` module."""

    def __init__(self, base: nn.Linear, adapter: 'CondLoRA', group: str, rank: int = 8,
                 alpha: float = 8.0, dropout: float = 0.0,
                 forward_mode: str = 'factorised') -> None:
        self._init_condlora(base, adapter, group, rank, alpha, dropout, forward_mode)

    def _factorised_delta(self, x: torch.Tensor) -> torch.Tensor:
        factor_a, factor_b = self._factors()
        return F.linear(F.linear(x, factor_a.to(x.dtype)), factor_b.to(x.dtype)) * self.scaling


class CondLoRAConv2d(_CondLoRALayer, nn.Conv2d):
    """nn.Conv2d with a CondLoRA branch (merged-weight forward by default)."""

    def __init__(self, base: nn.Conv2d, adapter: 'CondLoRA', group: str, rank: int = 8,
                 alpha: float = 8.0, dropout: float = 0.0, forward_mode: str = 'merged') -> None:
        self._init_condlora(base, adapter, group, rank, alpha, dropout, forward_mode)

    def _factorised_delta(self, x: torch.Tensor) -> torch.Tensor:
        factor_a, factor_b = self._factors()
        kernel_a = factor_a.reshape(self.rank, *self.weight.shape[1:]).to(x.dtype)
        hidden = self._conv_forward(x, kernel_a, None)
        return F.conv2d(hidden, factor_b[:, :, None, None].to(x.dtype)) * self.scaling


@MODELS.register_module()
class CondLoRA(AdapterBase):
    """CondLoRA adapter: per-group θ pairs + the injection of CondLoRA layer wrappers.

    Args:
        targets (list[str | dict]): module-name regexes; dict entries
            ``dict(type=regex, rank=..., alpha=..., dropout=...)`` override per target.
        rank (int): r. Defaults to 8.
        alpha (float, optional): scaling numerator, ΔW is scaled by alpha / r. Defaults to rank.
        dropout (float): dropout on the adapter branch input (factorised forward only).
        group_by (str): 'role_shape', 'shape' or a regex with capture groups (module docstring).
        conv_forward / linear_forward (str): 'merged' (W0 + ΔW) or 'factorised'.
    """

    layer_overrides = ('rank', 'alpha', 'dropout')

    def __init__(self, targets, rank: int = 8, alpha=None, dropout: float = 0.0,
                 group_by: str = 'role_shape', conv_forward: str = 'merged',
                 linear_forward: str = 'factorised') -> None:
        super().__init__(targets, conv_forward, linear_forward)
        if int(rank) < 1:
            raise ValueError(f'adapter.rank must be >= 1, got {rank}')
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.dropout = float(dropout)
        if group_by not in ('role_shape', 'shape'):
            try:
                if re.compile(group_by).groups == 0:
                    raise ValueError
            except (re.error, ValueError, TypeError) as err:
                raise ValueError("adapter.group_by must be 'role_shape', 'shape' or a regex with "
                                 f'capture groups, got {group_by!r}') from err
        self.group_by = group_by
        self.condlora_theta_A = nn.ParameterDict()
        self.condlora_theta_B = nn.ParameterDict()
        self.groups: Dict[str, List[str]] = OrderedDict()  # group id -> member layer names
        self._layer_group: Dict[str, str] = {}

    def config(self) -> dict:
        return dict(type='CondLoRA', targets=self.targets, rank=self.rank, alpha=self.alpha,
                    dropout=self.dropout, group_by=self.group_by, conv_forward=self.conv_forward,
                    linear_forward=self.linear_forward)

    def group_key(self, model: nn.Module, name: str, layer: nn.Module, rank: int) -> str:
        shape = 'x'.join(str(s) for s in layer.weight.shape)
        if self.group_by == 'shape':
            role = ''
        elif self.group_by == 'role_shape':
            role = depth_free_role(model, name)
        else:
            match = re.search(self.group_by, name)
            if match is None:
                raise ValueError(f'adapter.group_by regex {self.group_by!r} does not match the '
                                 f'target layer {name}')
            role = '.'.join(g or '' for g in match.groups())
        key = f'{role}__{shape}' if role else shape
        if rank != self.rank:
            key += f'__r{rank}'
        return key

    def _prepare(self, model: nn.Module, found: List[Tuple[str, nn.Module, dict]]) -> None:
        readable: Dict[str, str] = {}
        for name, layer, overrides in found:
            rank = int(overrides.get('rank', self.rank))
            key = self.group_key(model, name, layer, rank)
            group = re.sub(r'[^0-9A-Za-z_]', '_', key)  # a valid ParameterDict key
            if readable.setdefault(group, key) != key:
                raise ValueError(f'CondLoRA groups {readable[group]!r} and {key!r} map to the '
                                 f'same parameter name {group!r}; use adapter.group_by')
            d_out, d_in = weight_matrix_shape(layer)
            if group not in self.groups:
                device = layer.weight.device
                theta_a = torch.empty(d_out, rank, device=device)
                # kaiming_uniform(a=√5) on the (r x d_out) view: U(±1/√d_out), as LoRA's A.
                nn.init.kaiming_uniform_(theta_a.t(), a=math.sqrt(5))
                self.condlora_theta_A[group] = nn.Parameter(theta_a)
                self.condlora_theta_B[group] = nn.Parameter(torch.zeros(d_in, rank, device=device))
                self.groups[group] = []
            elif self.condlora_theta_B[group].shape != (d_in, rank):
                raise ValueError(f'CondLoRA group {group} mixes weight shapes; use a group_by '
                                 'that includes the shape')
            self.groups[group].append(name)
            self._layer_group[name] = group
        trainable = sum(p.numel() for p in self.parameters())
        print_log(f'CondLoRA(r={self.rank}): wrapped {len(found)} layers in {len(self.groups)} '
                  f'groups, {trainable} trainable parameters', logger='current')

    def _wrap(self, name: str, layer: nn.Module, overrides: dict) -> nn.Module:
        cls = CondLoRAConv2d if isinstance(layer, nn.Conv2d) else CondLoRALinear
        return cls(layer, self, self._layer_group[name],
                   rank=overrides.get('rank', self.rank),
                   alpha=overrides.get('alpha', self.alpha),
                   dropout=overrides.get('dropout', self.dropout),
                   forward_mode=self.forward_mode_for(layer))

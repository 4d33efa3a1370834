"""LORS^A on a query-conditioned parameter generator (e.g. Sparse R-CNN's DynamicConv)."""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from .adaptive_lowrank import AdaptiveLowRankResidual
from .checks import check_int


class AdaptiveLowRankGenerator(nn.Module):
    r"""Layer i of a stack of generators ``Linear(q) -> [M_1 | M_2 | ...]`` (flattened
    matrices, concatenated), sharing the dense generator: ``M_b(q) = W_shared,b(q) + \sum_k
    B_bk E_bk(q) A_bk`` (LORS^A).

    ``shared`` is the ``nn.Linear`` of the stack, owned by the module that shares it and held
    here as a plain reference. This layer owns one :class:`AdaptiveLowRankResidual` per block
    (its core generator ``E`` is zero at init, so the layer computes ``shared`` alone).

    Args:
        shared: the shared generator, ``in_features -> sum(rows * cols)``.
        blocks: ``[(rows, cols), ...]``, the matrices the output is made of, in order (row-major
            each), e.g. DynamicConv's ``[(in_channels, feat_channels), (feat_channels,
            out_channels)]``.
        rank: k of every block's residual, in ``[1, min(rows, cols)]``.
        num_terms: K >= 1.
    """

    def __init__(self, shared: nn.Linear, blocks: Sequence[Sequence[int]], rank: int = 16,
                 num_terms: int = 1):
        super().__init__()
        object.__setattr__(self, 'shared', shared)  # plain reference: owned by the sharer
        self.blocks = [tuple(check_int(n, 'blocks') for n in block) for block in blocks]
        if not self.blocks or any(len(block) != 2 for block in self.blocks):
            raise ValueError(f'blocks: a list of (rows, cols) pairs, got {blocks!r}')
        total = sum(rows * cols for rows, cols in self.blocks)
        if total != shared.out_features:
            raise ValueError(f'blocks: {self.blocks} hold {total} numbers but the generator '
                             f'gives {shared.out_features}')
        self.residuals = nn.ModuleList(
            AdaptiveLowRankResidual(shared.in_features, rows, cols, groups=1, rank=rank,
                                    num_terms=num_terms) for rows, cols in self.blocks)

    @property
    def in_features(self) -> int:
        return self.shared.in_features

    @property
    def out_features(self) -> int:
        return self.shared.out_features

    def reset_parameters(self) -> None:
        for residual in self.residuals:
            residual.reset_parameters()

    def init_weights(self) -> None:
        self.reset_parameters()

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        residual = torch.cat([r(query).flatten(-3) for r in self.residuals], dim=-1)
        return self.shared(query) + residual

    @torch.no_grad()
    def fold(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The plain generator ``(weight, bias)`` of this layer: the residual is affine in q
        (:meth:`AdaptiveLowRankResidual.fold_affine`), computed in float64."""
        weights: List[torch.Tensor] = []
        biases: List[torch.Tensor] = []
        for residual in self.residuals:
            weight, bias = residual.fold_affine(torch.float64)
            weights.append(weight)
            biases.append(bias)
        dtype = self.shared.weight.dtype
        weight = self.shared.weight.double() + torch.cat(weights)
        bias = torch.cat(biases)
        if self.shared.bias is not None:
            bias = bias + self.shared.bias.double()
        return weight.to(dtype), bias.to(dtype)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, blocks={self.blocks}'

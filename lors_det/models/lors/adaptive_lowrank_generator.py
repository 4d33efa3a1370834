"""LORS^A: query-generated matrices for N layers, a shared generator plus private low-rank cores."""
import math
from typing import Sequence, Union

import torch
import torch.nn as nn
from mmdet.registry import MODELS

from .lowrank_ops import (apply_residual, check_choice, check_positive_int, materialize_residual,
                          per_layer_ints, residual_macs)


def reset_shared_generator(linear: nn.Linear) -> None:
    """AdaMixer's generator init: zero weight, PyTorch-default bias ``U(+-1/sqrt(fan_in))``, so
    at init every query gets the same matrix, given by the bias alone."""
    with torch.no_grad():
        nn.init.zeros_(linear.weight)
        if linear.bias is not None:
            bound = 1 / math.sqrt(linear.in_features)
            nn.init.uniform_(linear.bias, -bound, bound)


def reset_core_generator(linear: nn.Linear) -> None:
    """Zero weight and bias: every core ``E(q)`` is 0, so the private residual starts at 0."""
    with torch.no_grad():
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)


@MODELS.register_module()
class AdaptiveLowRankResidualGenerator(nn.Module):
    r"""Per-query ``d x h`` matrices for N layers:
    ``W_i(q)[g] = W_shared(q)[g] + sum_{j<K_i} B_i[g, j] @ E_i(q)[g, j] @ A_i[g, j]``.

    * ``W_shared(q)`` = ``Linear(query_dim -> G*d*h)(q)``, one generator for all layers; zero
      weight and default bias, like AdaMixer's parameter generator.
    * ``E_i(q)`` = ``Linear(query_dim -> G*K_i*k_i*k_i)(q)``, the private ``k_i x k_i`` cores of
      layer i; weight and bias zero, so ``W_i(q) == W_shared(q)`` at init.
    * ``B_i`` (``G*K_i, d, k_i``) and ``A_i`` (``G*K_i, k_i, h``): static private factors,
      ``kaiming_uniform_`` (``a=0``, torch's fan-in of the stored 3-D tensor, as in the released
      LORS code). Index ``g*K_i + j`` holds group g, term j.

    ``G`` (``groups``) independent matrices are generated per query (AdaMixer's mixing groups);
    ``groups=1`` is the plain single-matrix case.

    Gradients at init: ``E_i`` is zero, so ``dL/dB_i = dL/dW (E A)^T`` and ``dL/dA_i`` are zero on
    the first step, while ``dL/dE_i = B_i^T dL/dW A_i^T`` is not; the core generator learns first.

    Args:
        query_dim: length of q.
        rows, cols: d and h, the generated matrix shape.
        num_layers: N.
        ranks: core size k_i, an int or N ints, each in ``[1, min(rows, cols)]``.
        num_terms: K_i, an int or N ints >= 1.
        groups: G matrices per query.
        shared_bias: whether the shared generator has a bias (AdaMixer: yes).
    """

    def __init__(self,
                 query_dim: int,
                 rows: int,
                 cols: int,
                 num_layers: int,
                 ranks: Union[int, Sequence[int]] = 16,
                 num_terms: Union[int, Sequence[int]] = 1,
                 groups: int = 1,
                 shared_bias: bool = True):
        super().__init__()
        owner = type(self).__name__
        self.query_dim = check_positive_int(query_dim, 'query_dim', owner)
        self.rows = check_positive_int(rows, 'rows', owner)
        self.cols = check_positive_int(cols, 'cols', owner)
        self.num_layers = check_positive_int(num_layers, 'num_layers', owner)
        self.groups = check_positive_int(groups, 'groups', owner)
        self.ranks = per_layer_ints(ranks, self.num_layers, 'ranks', owner, high=min(rows, cols),
                                    high_name='min(rows, cols)')
        self.num_terms = per_layer_ints(num_terms, self.num_layers, 'num_terms', owner)

        G = self.groups
        self.shared_generator = nn.Linear(self.query_dim, G * self.rows * self.cols,
                                          bias=shared_bias)
        self.core_generators = nn.ModuleList(
            nn.Linear(self.query_dim, G * K * k * k) for k, K in zip(self.ranks, self.num_terms))
        self.private_B = nn.ParameterList(
            nn.Parameter(torch.empty(G * K, self.rows, k)) for k, K in zip(self.ranks,
                                                                             self.num_terms))
        self.private_A = nn.ParameterList(
            nn.Parameter(torch.empty(G * K, k, self.cols)) for k, K in zip(self.ranks,
                                                                             self.num_terms))
        self.reset_parameters()

    def reset_parameters(self):
        reset_shared_generator(self.shared_generator)
        for generator in self.core_generators:
            reset_core_generator(generator)
        with torch.no_grad():
            for factor in list(self.private_B) + list(self.private_A):
                nn.init.kaiming_uniform_(factor)

    def init_weights(self):
        """mmengine's ``BaseModule.init_weights`` calls this on children: re-apply the LORS init."""
        self.reset_parameters()

    # ------------------------------------------------------------------ pieces
    def shared(self, query: torch.Tensor) -> torch.Tensor:
        """``W_shared(q)``: ``[..., query_dim]`` -> ``[..., G, d, h]``."""
        return self.shared_generator(query).unflatten(-1, (self.groups, self.rows, self.cols))

    def cores(self, query: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """``E_i(q)``: ``[..., query_dim]`` -> ``[..., G, K_i, k_i, k_i]``."""
        i = self._check_layer(layer_idx)
        k = self.ranks[i]
        return self.core_generators[i](query).unflatten(-1, (self.groups, self.num_terms[i], k, k))

    def factors(self, layer_idx: int):
        """``(B_i, A_i)`` viewed as ``(G, K_i, d, k_i)`` and ``(G, K_i, k_i, h)``."""
        i = self._check_layer(layer_idx)
        K = self.num_terms[i]
        return (self.private_B[i].unflatten(0, (self.groups, K)),
                self.private_A[i].unflatten(0, (self.groups, K)))

    def residual(self, query: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """Materialised private part ``sum_j B E(q) A``: ``[..., G, d, h]``."""
        B, A = self.factors(layer_idx)
        return materialize_residual(B, self.cores(query, layer_idx), A)

    # ------------------------------------------------------------------ use
    def forward(self, query: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """Materialised ``W_i(q)``: ``[..., query_dim]`` -> ``[..., G, d, h]``."""
        return self.shared(query) + self.residual(query, layer_idx)

    def matmul(self, x: torch.Tensor, query: torch.Tensor, layer_idx: int,
               strategy: str = 'auto') -> torch.Tensor:
        """``x @ W_i(q)`` for ``x`` of shape ``[..., G, P, d]`` -> ``[..., G, P, h]``.

        ``strategy``: ``'materialize'`` forms ``W_i(q)`` per query; ``'sequential'`` applies the
        residual as ``((x B) E(q)) A`` (see :func:`residual_macs` for both costs); ``'auto'`` takes
        the one with fewer MACs for this ``P``.
        """
        check_choice(strategy, ('auto', 'materialize', 'sequential'), 'strategy',
                     type(self).__name__)
        i = self._check_layer(layer_idx)
        if strategy == 'auto':
            macs = residual_macs(self.rows, self.cols, self.ranks[i], self.num_terms[i],
                                 num_vectors=x.shape[-2])
            strategy = min(macs, key=macs.get)
        if strategy == 'materialize':
            return x @ self(query, layer_idx)
        B, A = self.factors(i)
        return x @ self.shared(query) + apply_residual(x, B, self.cores(query, i), A)

    def _check_layer(self, layer_idx: int) -> int:
        if not (0 <= layer_idx < self.num_layers):
            raise IndexError(f'{type(self).__name__}: layer_idx={layer_idx} out of range for '
                             f'num_layers={self.num_layers}')
        return layer_idx

    def extra_repr(self) -> str:
        return (f'query_dim={self.query_dim}, rows={self.rows}, cols={self.cols}, '
                f'groups={self.groups}, num_layers={self.num_layers}, ranks={self.ranks}, '
                f'num_terms={self.num_terms}')

"""Building blocks shared by the LORS modules: config validation and the low-rank residual algebra.

Notation (lors_spec.md section 6.3). A group of ``G`` generated matrices, each ``d x h``, gets a
private residual ``sum_j L[g, j] @ E[..., g, j] @ R[g, j]`` with

* ``L`` (left factor, static):   ``(G, K, d, k)``
* ``E`` (core, per query):       ``(..., G, K, k, k)``
* ``R`` (right factor, static):  ``(G, K, k, h)``

``...`` are the query batch dims. The two ways to use the residual are

* :func:`materialize_residual` builds the ``d x h`` matrix per query;
* :func:`apply_residual` multiplies ``x @ residual`` for ``x`` of shape ``(..., G, P, d)`` without
  forming it: ``((x @ L) @ E) @ R``. ``x @ L`` and ``. @ R`` use the *static* factors, so they are
  one large GEMM over all queries; only the ``k x k`` step is a per-query batched matmul.

:func:`residual_macs` gives the cost of both, so callers can pick the cheaper one.
"""
import numbers
from typing import List, Sequence, Union

import torch

IntOrSeq = Union[int, Sequence[int]]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(value, key: str, owner: str) -> int:
    """Return ``value`` as int, or raise ValueError naming ``owner``'s config ``key``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f'{owner}: `{key}` must be a positive int, got {value!r}')
    return int(value)


def check_choice(value, choices: Sequence[str], key: str, owner: str) -> str:
    if value not in choices:
        raise ValueError(f'{owner}: `{key}` must be one of {list(choices)}, got {value!r}')
    return value


def per_layer_ints(value: IntOrSeq, num_layers: int, key: str, owner: str,
                   low: int = 1, high: int = None, high_name: str = None) -> List[int]:
    """Expand an int (same for every layer) or a per-layer sequence into a validated list.

    Raises ValueError naming ``key`` when the sequence length is not ``num_layers`` or an entry is
    outside ``[low, high]``.
    """
    if _is_int(value):
        values = [int(value)] * num_layers
    elif isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ValueError(f'{owner}: `{key}` must have one entry per layer/stage '
                             f'({num_layers}), got {len(value)} entries: {list(value)}')
        values = list(value)
    else:
        raise ValueError(f'{owner}: `{key}` must be an int or a list of {num_layers} ints, '
                         f'got {value!r}')
    for i, v in enumerate(values):
        check_int_range(v, f'{key}[{i}]', owner, low, high, high_name)
    return [int(v) for v in values]


def check_int_range(value, key: str, owner: str, low: int = 1, high: int = None,
                    high_name: str = None) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f'[{low}, {high_name + "=" if high_name else ""}{high}]' if high is not None \
            else f'>= {low}'
        raise ValueError(f'{owner}: `{key}` must be an int in {bound}, got {value!r}')
    return int(value)


def materialize_residual(left: torch.Tensor, core: torch.Tensor,
                         right: torch.Tensor) -> torch.Tensor:
    """``sum_j left[g, j] @ core[..., g, j] @ right[g, j]`` -> ``(..., G, d, h)``.

    The cheaper association is used: the per-query step ``k x k`` times the smaller outer factor
    costs ``min(d, h) * k * k``; the remaining product contracts ``(j, l)`` together, so the K
    terms are summed inside one GEMM with ``d * K*k * h`` MACs and no ``(..., K, d, h)`` temporary.
    """
    d, h = left.shape[-2], right.shape[-1]
    if d <= h:
        left_core = torch.einsum('gjdk,...gjkl->...gjdl', left, core)
        return torch.einsum('...gjdl,gjlh->...gdh', left_core, right)
    core_right = torch.einsum('...gjkl,gjlh->...gjkh', core, right)
    return torch.einsum('gjdk,...gjkh->...gdh', left, core_right)


def apply_residual(x: torch.Tensor, left: torch.Tensor, core: torch.Tensor,
                   right: torch.Tensor) -> torch.Tensor:
    """``x @ sum_j left[g, j] @ core[..., g, j] @ right[g, j]`` without forming the matrix.

    ``x``: ``(..., G, P, d)`` -> ``(..., G, P, h)``. MACs per query and group:
    ``K * P * k * (d + k + h)``.
    """
    projected = torch.einsum('...gpd,gjdk->...gpjk', x, left)       # static GEMM, all queries
    mixed = torch.einsum('...gpjk,...gjkl->...gpjl', projected, core)  # per-query k x k
    return torch.einsum('...gpjl,gjlh->...gph', mixed, right)       # static GEMM, sums over j


def residual_macs(rows: int, cols: int, rank: int, terms: int, num_vectors: int) -> dict:
    """MACs per query and group of the two ways to compute ``x @ (W(q) + residual(q))``.

    ``x`` is ``num_vectors x rows``; the residual has ``terms`` rank-``rank`` terms of size
    ``rows x cols``. The product with the shared ``W(q)`` (``num_vectors * rows * cols``) is needed
    either way and is left out; when materialised, the residual is added to ``W(q)`` and rides
    along in that product for free.
    """
    return dict(
        materialize=terms * (min(rows, cols) * rank * rank + rows * rank * cols),
        sequential=terms * num_vectors * rank * (rows + rank + cols))

"""LORS^T: one layer of a stack of same-shape Linears that share a dense weight."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_choice, check_int, term_ranks


class LowRankResidualLinear(nn.Module):
    r"""``y = x (W_shared + \sum_k B_k A_k)^T + b``: layer i of a LORS^T stack.

    ``shared`` is the ``nn.Linear`` every layer of the stack uses; it is owned (registered,
    initialised, saved) by the module that shares it, and held here as a plain reference. This
    layer owns its ``num_terms`` low-rank terms, stored concatenated (``B = [B_1 .. B_K]``
    ``(out, R)``, ``A = [A_1; ..; A_K]`` ``(R, in)``, ``R = sum of the ranks``, since
    ``B A = sum_k B_k A_k``), and its bias (the shared bias, if ``shared`` has one, is added).

    Init (:meth:`reset_parameters`): exactly one factor of every term is zero, so the layer
    computes ``shared`` alone. ``zero_init='B'`` (the released LORS code, LoRA): ``B_k = 0``,
    ``A_k`` Kaiming-uniform (fan-in ``in``); ``zero_init='A'``: ``A_k = 0``, ``B_k``
    Kaiming-uniform (fan-in ``r_k``). The bias starts at zero.

    Compute, with ``n`` input rows, ``d = out``, ``h = in``: the merged ``x (W + B A)^T`` costs
    ``n h d + d R h`` MACs, the factorised ``x W^T + (x A^T) B^T`` ``n h d + n R (h + d)``; the
    rank cancels, so training merges from ``merge_min_rows = d h / (d + h) + 1`` rows on. In eval
    mode without autograd the merged weight is computed once and cached, keyed by the versions
    and storages of the weights (an optimiser step, ``load_state_dict``, ``.to()`` or
    ``train()`` invalidate it).

    Args:
        shared: the shared ``nn.Linear`` (``in -> out``).
        rank: rank of every term (int) or one rank per term, in ``[1, min(in, out)]``.
        num_terms: K >= 1.
        bias: own a bias.
        zero_init: 'A' or 'B', the factor that starts at zero.
        merge_min_rows: rows from which training merges ``W + B A`` (None: automatic).
    """

    def __init__(self,
                 shared: nn.Linear,
                 rank: Union[int, Sequence[int]] = 8,
                 num_terms: int = 1,
                 bias: bool = True,
                 zero_init: str = 'B',
                 merge_min_rows: Optional[int] = None):
        super().__init__()
        object.__setattr__(self, 'shared', shared)  # plain reference: owned by the sharer
        self.in_features, self.out_features = shared.in_features, shared.out_features
        self.num_terms = check_int(num_terms, 'num_terms')
        self.ranks = term_ranks(rank, self.num_terms, 'rank', high=min(self.in_features,
                                                                        self.out_features),
                                high_name='min(in_features, out_features)')
        self.zero_init = check_choice(zero_init, ('A', 'B'), 'zero_init')
        if merge_min_rows is None:
            merge_min_rows = self.in_features * self.out_features // (
                self.in_features + self.out_features) + 1
        self.merge_min_rows = check_int(merge_min_rows, 'merge_min_rows', low=0)
        self.B = nn.Parameter(torch.empty(self.out_features, sum(self.ranks)))
        self.A = nn.Parameter(torch.empty(sum(self.ranks), self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self._merged_cache = None  # (key, weight, bias); not state: never saved
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The private terms at their init (``shared`` is initialised by its owner)."""
        for B, A in self.terms():
            nn.init.kaiming_uniform_(A if self.zero_init == 'B' else B)
            nn.init.zeros_(B if self.zero_init == 'B' else A)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._merged_cache = None

    def init_weights(self) -> None:
        self.reset_parameters()

    def terms(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Views ``[(B_k, A_k)]`` of the concatenated factors."""
        pairs, start = [], 0
        for r in self.ranks:
            pairs.append((self.B[:, start:start + r], self.A[start:start + r]))
            start += r
        return pairs

    def merged_weight(self) -> torch.Tensor:
        """``W_shared + B A`` (``out x in``), differentiable."""
        return torch.addmm(self.shared.weight, self.B, self.A)

    def merged_bias(self) -> Optional[torch.Tensor]:
        biases = [b for b in (self.shared.bias, self.bias) if b is not None]
        if not biases:
            return None
        return biases[0] if len(biases) == 1 else biases[0] + biases[1]

    @torch.no_grad()
    def fold(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The plain ``(weight, bias)`` of this layer (detached copies)."""
        bias = self.merged_bias()
        return self.merged_weight().detach().clone(), None if bias is None else bias.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not (torch.is_grad_enabled() and any(
                p.requires_grad for p in self._weights())):
            weight, bias = self._cached_merged()
            return F.linear(x, weight, bias)
        bias = self.merged_bias()
        if x.numel() // self.in_features >= self.merge_min_rows:
            return F.linear(x, self.merged_weight(), bias)
        return F.linear(x, self.shared.weight, bias) + F.linear(F.linear(x, self.A), self.B)

    def _weights(self) -> list:
        return [p for p in (self.shared.weight, self.shared.bias, self.B, self.A, self.bias)
                if p is not None]

    @torch.no_grad()
    def _cached_merged(self):
        # _version moves on in-place updates (optimiser step, load_state_dict's copy_);
        # data_ptr moves when .to()/.half() swap the storage
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self._weights())
        if self._merged_cache is None or self._merged_cache[0] != key:
            self._merged_cache = (key, self.merged_weight(), self.merged_bias())
        return self._merged_cache[1], self._merged_cache[2]

    def train(self, mode: bool = True):
        self._merged_cache = None
        return super().train(mode)

    def _apply(self, *args, **kwargs):
        self._merged_cache = None  # free the copy on the old device / dtype
        return super()._apply(*args, **kwargs)

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'ranks={self.ranks}, bias={self.bias is not None}, '
                f'zero_init={self.zero_init!r}, merge_min_rows={self.merge_min_rows}')

"""LORS^T: a stack of N linear layers sharing one dense weight plus private low-rank residuals."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS

from .lowrank_ops import check_choice, check_int_range, check_positive_int, per_layer_ints


@MODELS.register_module()
class LowRankResidualLinearStack(nn.Module):
    r"""N linear layers ``y = x W_i^T + b_i`` with ``W_i = W_shared + sum_k B_ik A_ik`` (LORS^T).

    Every layer has the same ``in_features -> out_features`` shape. ``W_shared`` (``out x in``) is
    stored once; layer ``i`` owns ``K_i`` pairs ``B_ik`` (``out x r_ik``) and ``A_ik``
    (``r_ik x in``) and, optionally, a private bias.

    The K_i pairs of a layer are stored concatenated, ``B_i = [B_i1 .. B_iK]`` and
    ``A_i = [A_i1; ..; A_iK]``, because ``B_i @ A_i == sum_k B_ik @ A_ik``; :meth:`factors` returns
    the per-term views. Each term is initialised on its own slice, so the init matches K separate
    pairs exactly.

    Initialisation:

    * ``W_shared``: PyTorch's ``nn.Linear`` default (Kaiming-uniform, ``a=sqrt(5)``); the optional
      shared bias ``U(+-1/sqrt(in))``. This is what the released LORS code's ``base_out_proj`` gets.
    * Exactly one factor of every pair is zero, so ``W_i == W_shared`` at init. ``zero_init='A'``
      (default, the issue's wording "W_shared and B Kaiming init, A zero init"): ``A_ik = 0`` and
      ``B_ik`` Kaiming-uniform (``a=0``, fan-in ``r_ik``). ``zero_init='B'`` (the released LORS
      code and LoRA): ``B_ik = 0`` and ``A_ik`` Kaiming-uniform (``a=0``, fan-in ``in``).
      The forward is identical; only which factor gets a gradient on the first step differs
      (``dL/dA_i = B_i^T G_i``, ``dL/dB_i = G_i A_i^T`` with ``G_i = dL/dW_i``, so the zero factor's
      partner receives no gradient until the zero factor has moved).
    * Private biases: zero.

    Compute. With ``n`` input rows (all leading dims flattened), ``d = out``, ``h = in``,
    ``R = sum_k r_ik``:

    * merged ``x (W + B A)^T`` costs ``n*h*d + d*R*h`` MACs and materialises a ``d x h`` temporary
      (kept for backward too);
    * factorised ``x W^T + (x A^T) B^T`` costs ``n*h*d + n*R*(h + d)`` and forms nothing.

    The rank cancels: factorised is cheaper exactly when ``n < d*h / (d + h)`` (about 254 rows for
    the AdaMixer out projection 32768 -> 256). Training picks the path by row count against
    ``merge_min_rows`` (default ``d*h // (d + h) + 1``). In eval mode without autograd the merged
    weights are computed once per layer and cached (no extra MACs at all); the cache is keyed by
    the parameters' version counters and storage, so an optimiser step, ``load_state_dict``,
    ``.to()`` or ``train()`` invalidates it.

    Args:
        in_features, out_features: layer shape.
        num_layers: N.
        ranks: rank of every term. An int (all terms of all layers), a list of N ints (per layer,
            shared by that layer's terms) or a list of N lists with ``num_terms[i]`` ints.
            Each rank must be in ``[1, min(in_features, out_features)]``.
        num_terms: K_i, an int or a list of N ints >= 1.
        shared_bias: add a bias shared by all layers (off, as in the released code).
        private_bias: give every layer its own bias (zero init).
        zero_init: ``'A'`` or ``'B'``, the factor that starts at zero (see above).
        merge_min_rows: training uses the merged weight from this many rows on (None: auto).
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 num_layers: int,
                 ranks: Union[int, Sequence] = 8,
                 num_terms: Union[int, Sequence[int]] = 1,
                 shared_bias: bool = False,
                 private_bias: bool = True,
                 zero_init: str = 'A',
                 merge_min_rows: Optional[int] = None):
        super().__init__()
        owner = type(self).__name__
        self.in_features = check_positive_int(in_features, 'in_features', owner)
        self.out_features = check_positive_int(out_features, 'out_features', owner)
        self.num_layers = check_positive_int(num_layers, 'num_layers', owner)
        self.num_terms = per_layer_ints(num_terms, self.num_layers, 'num_terms', owner)
        self.term_ranks = self._expand_ranks(ranks, owner)
        self.zero_init = check_choice(zero_init, ('A', 'B'), 'zero_init', owner)
        if merge_min_rows is None:
            merge_min_rows = self.in_features * self.out_features // (
                self.in_features + self.out_features) + 1
        self.merge_min_rows = check_int_range(merge_min_rows, 'merge_min_rows', owner, low=0)

        self.shared_weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.shared_bias = nn.Parameter(torch.empty(self.out_features)) if shared_bias else None
        self.private_B = nn.ParameterList(
            nn.Parameter(torch.empty(self.out_features, sum(r))) for r in self.term_ranks)
        self.private_A = nn.ParameterList(
            nn.Parameter(torch.empty(sum(r), self.in_features)) for r in self.term_ranks)
        self.private_bias = nn.ParameterList(
            nn.Parameter(torch.empty(self.out_features))
            for _ in range(self.num_layers)) if private_bias else None

        self._merged_cache = {}  # layer -> (key, weight, bias); not state: never saved
        self.reset_parameters()

    def _expand_ranks(self, ranks, owner: str) -> List[List[int]]:
        max_rank = min(self.in_features, self.out_features)
        bound = dict(low=1, high=max_rank, high_name='min(in_features, out_features)')
        if isinstance(ranks, (list, tuple)) and any(isinstance(r, (list, tuple)) for r in ranks):
            if len(ranks) != self.num_layers:
                raise ValueError(f'{owner}: `ranks` must have one entry per layer '
                                 f'({self.num_layers}), got {len(ranks)}: {list(ranks)}')
            out = []
            for i, (layer_ranks, k) in enumerate(zip(ranks, self.num_terms)):
                if not isinstance(layer_ranks, (list, tuple)) or len(layer_ranks) != k:
                    raise ValueError(f'{owner}: `ranks[{i}]` must list num_terms[{i}]={k} ranks, '
                                     f'got {layer_ranks!r}')
                out.append([check_int_range(r, f'ranks[{i}][{j}]', owner, **bound)
                            for j, r in enumerate(layer_ranks)])
            return out
        per_layer = per_layer_ints(ranks, self.num_layers, 'ranks', owner, **bound)
        return [[r] * k for r, k in zip(per_layer, self.num_terms)]

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.shared_weight, a=math.sqrt(5))
        if self.shared_bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.shared_bias, -bound, bound)
        for i in range(self.num_layers):
            for B, A in self.factors(i):
                nn.init.kaiming_uniform_(A if self.zero_init == 'B' else B)
                nn.init.zeros_(B if self.zero_init == 'B' else A)
        if self.private_bias is not None:
            for bias in self.private_bias:
                nn.init.zeros_(bias)
        self._merged_cache.clear()

    def init_weights(self):
        """mmengine's ``BaseModule.init_weights`` calls this on children: re-apply the LORS init."""
        self.reset_parameters()

    # ------------------------------------------------------------------ weights
    def factors(self, layer_idx: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Views ``[(B_ik, A_ik) for k in range(K_i)]`` into layer ``layer_idx``'s factors."""
        i = self._check_layer(layer_idx)
        pairs, start = [], 0
        for r in self.term_ranks[i]:
            pairs.append((self.private_B[i][:, start:start + r],
                          self.private_A[i][start:start + r]))
            start += r
        return pairs

    def merged_weight(self, layer_idx: int) -> torch.Tensor:
        """Dense ``W_shared + sum_k B_ik A_ik`` (``out x in``), differentiable."""
        i = self._check_layer(layer_idx)
        return torch.addmm(self.shared_weight, self.private_B[i], self.private_A[i])

    def merged_bias(self, layer_idx: int) -> Optional[torch.Tensor]:
        """Shared plus private bias of a layer, or None when the stack has neither."""
        i = self._check_layer(layer_idx)
        biases = [b for b in (self.shared_bias,
                              None if self.private_bias is None else self.private_bias[i])
                  if b is not None]
        if not biases:
            return None
        return biases[0] if len(biases) == 1 else biases[0] + biases[1]

    @torch.no_grad()
    def fold(self) -> List[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Plain per-layer ``(weight, bias)`` tensors (detached copies), e.g. for a checkpoint
        converter that replaces the stack with N ordinary ``nn.Linear`` layers."""
        out = []
        for i in range(self.num_layers):
            bias = self.merged_bias(i)
            out.append((self.merged_weight(i).detach().clone(),
                        None if bias is None else bias.detach().clone()))
        return out

    # ------------------------------------------------------------------ forward
    def uses_merged_path(self, num_rows: int) -> bool:
        """Whether a training forward over ``num_rows`` input rows merges ``W + B A`` first."""
        return num_rows >= self.merge_min_rows

    def forward(self, x: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """``x``: ``[..., in_features]`` -> ``[..., out_features]`` through layer ``layer_idx``."""
        i = self._check_layer(layer_idx)
        if x.shape[-1] != self.in_features:
            raise ValueError(f'{type(self).__name__}: input last dim {x.shape[-1]} != '
                             f'in_features={self.in_features}')
        if self._may_use_cache(i):
            weight, bias = self._cached_merged(i)
            return F.linear(x, weight, bias)
        bias = self.merged_bias(i)
        if self.uses_merged_path(x.numel() // self.in_features):
            return F.linear(x, self.merged_weight(i), bias)
        low_rank = F.linear(F.linear(x, self.private_A[i]), self.private_B[i])
        return F.linear(x, self.shared_weight, bias) + low_rank

    def _layer_params(self, i: int) -> list:
        params = [self.shared_weight, self.private_B[i], self.private_A[i], self.shared_bias]
        params.append(None if self.private_bias is None else self.private_bias[i])
        return [p for p in params if p is not None]

    def _may_use_cache(self, i: int) -> bool:
        # The cache holds detached tensors: only valid when no gradient can be asked for.
        if self.training:
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self._layer_params(i)))

    @torch.no_grad()
    def _cached_merged(self, i: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        # _version moves on every in-place update (optimiser step, load_state_dict's copy_);
        # data_ptr moves when .to()/.half() swap the storage.
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self._layer_params(i))
        entry = self._merged_cache.get(i)
        if entry is None or entry[0] != key:
            entry = (key, self.merged_weight(i), self.merged_bias(i))
            self._merged_cache[i] = entry
        return entry[1], entry[2]

    def train(self, mode: bool = True):
        self._merged_cache.clear()
        return super().train(mode)

    def _apply(self, *args, **kwargs):
        self._merged_cache.clear()  # free the stale copies on the old device/dtype
        return super()._apply(*args, **kwargs)

    def _check_layer(self, layer_idx: int) -> int:
        if not (0 <= layer_idx < self.num_layers):
            raise IndexError(f'{type(self).__name__}: layer_idx={layer_idx} out of range for '
                             f'num_layers={self.num_layers}')
        return layer_idx

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'num_layers={self.num_layers}, num_terms={self.num_terms}, '
                f'ranks={self.term_ranks}, shared_bias={self.shared_bias is not None}, '
                f'private_bias={self.private_bias is not None}, zero_init={self.zero_init!r}, '
                f'merge_min_rows={self.merge_min_rows}')

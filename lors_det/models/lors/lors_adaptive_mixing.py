"""AdaMixer's adaptive mixing for all N decoder stages, with LORS^A on the generated mixing matrices
and LORS^T on the output projection (lors_spec.md sections 2 and 6)."""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS

from .adaptive_lowrank_generator import reset_core_generator, reset_shared_generator
from .lowrank_ops import (apply_residual, check_choice, check_positive_int, materialize_residual,
                          per_layer_ints)
from .lowrank_residual_linear import LowRankResidualLinearStack


@MODELS.register_module()
class LORSAdaptiveMixingStack(nn.Module):
    r"""Adaptive channel + spatial mixing and output projection shared by ``num_stages`` stages.

    For stage i and query q (``G`` groups, ``C = feat_channels / G`` channels per group):

    * ``[M_c(q), S_c(q)] = parameter_generator(q)``, one ``Linear(D -> G*(C*C + P_in*P_out))``
      for all stages (zero weight, default bias: AdaMixer's generator). Per group, the first
      ``C*C`` outputs are M (``C_in x C_out``), the next ``P_in*P_out`` are S (``P_out x P_in``).
    * ``[E^M, E^S] = core_generators[i](q)``, ``Linear(D -> 2*G*K_i*k_i^2)``, zero weight and
      bias; the first half are the ``G*K_i`` cores of M, the second those of S (index ``g*K_i+j``).
    * ``M_i(q) = M_c(q) + sum_j ml[i][g,j] E^M_j(q) mr[i][g,j]`` with ``ml`` (``G*K_i, C, k``),
      ``mr`` (``G*K_i, k, C``); ``S_i(q) = S_c(q) + sum_j sl E^S_j sr`` with ``sl``
      (``G*K_i, P_out, k``), ``sr`` (``G*K_i, k, P_in``); all four ``kaiming_uniform_``.
    * ``out_proj``: :class:`LowRankResidualLinearStack` ``G*C*P_out -> D``, shared weight without
      bias, per stage rank-``r_i`` residual and bias.

    ``forward`` is AdaMixer's ``AdaptiveMixing`` (adamixer_spec 1.7(b) steps 5-8) with these
    matrices: ``x @ M``, non-affine LayerNorm over ``(P_in, C)``, ReLU; ``S @ .``, LayerNorm over
    ``(P_out, C)``, ReLU; flatten in (group, point, channel) order; ``out_proj``. The residual add
    and the per-stage ``out_norm`` LayerNorm belong to the decoder stage.

    How each private residual is computed (MACs per query, group and term; default
    C=128, P_in=64, P_out=128, k=16; see :func:`~.lowrank_ops.residual_macs`):

    * **M, applied sequentially** (``channel_residual='sequential'``):
      ``x @ M_c + ((x @ ml) @ E^M) @ mr`` costs ``P_in*k*(2C + k) = 278,528`` against
      ``C*k*k + C*k*C = 294,912`` to materialise ``ml E mr``. ``x @ ml`` and ``. @ mr`` use static
      weights, so they run as one GEMM over all queries; only the ``k x k`` step is per query, and
      no ``(B*N, G, K, C, C)`` residual is stored for backward.
    * **S, materialised** (``spatial_residual='materialize'``): ``sl @ (E^S @ sr)`` costs
      ``k*k*P_in + P_out*k*P_in = 147,456`` and then rides along in ``S @ x`` (needed for
      ``S_c`` anyway), while the sequential form would cost ``C*k*(P_in + k + P_out) = 425,984``.

    Both choices can be switched (``'sequential'`` / ``'materialize'``) for other dimensions;
    results are identical up to float rounding.

    The shared and the stage's core generator are two ``F.linear`` calls, not one fused GEMM:
    fusing would need either a per-forward ``torch.cat`` of the 12.6 M-entry shared weight (a copy
    as large as the weight read of the GEMM itself) or a per-stage copy of the shared weight
    (undoing the sharing). The core GEMM is only ``2*K_i*k^2 / (C^2 + P_in*P_out)`` = 2-6 % of the
    shared one, so a second launch is the cheaper option.

    Args:
        num_stages: N.
        content_dim: D, the query dim (input of the generators, output of ``out_proj``).
        feat_channels: channels of the sampled features, split into ``n_groups`` groups.
        n_groups: G.
        in_points, out_points: P_in (sampled points per group), P_out.
        kernel_sizes: LORS^A core size k_i, an int or one per stage, in
            ``[1, min(C, in_points, out_points)]``.
        kernel_groups: LORS^A terms K_i, an int or one per stage.
        out_proj_ranks: LORS^T rank r_i of the output projection, int or one per stage.
        out_proj_zero_init: ``'A'`` or ``'B'``, see :class:`LowRankResidualLinearStack`.
        channel_residual, spatial_residual: ``'sequential'`` or ``'materialize'``.
    """

    def __init__(self,
                 num_stages: int = 6,
                 content_dim: int = 256,
                 feat_channels: int = 256,
                 n_groups: int = 2,
                 in_points: int = 64,
                 out_points: int = 128,
                 kernel_sizes: Union[int, Sequence[int]] = 16,
                 kernel_groups: Union[int, Sequence[int]] = (1, 1, 2, 2, 3, 3),
                 out_proj_ranks: Union[int, Sequence[int]] = 8,
                 out_proj_zero_init: str = 'A',
                 channel_residual: str = 'sequential',
                 spatial_residual: str = 'materialize'):
        super().__init__()
        owner = type(self).__name__
        self.num_stages = check_positive_int(num_stages, 'num_stages', owner)
        self.content_dim = check_positive_int(content_dim, 'content_dim', owner)
        self.feat_channels = check_positive_int(feat_channels, 'feat_channels', owner)
        self.n_groups = check_positive_int(n_groups, 'n_groups', owner)
        self.in_points = check_positive_int(in_points, 'in_points', owner)
        self.out_points = check_positive_int(out_points, 'out_points', owner)
        if self.feat_channels % self.n_groups:
            raise ValueError(f'{owner}: `feat_channels`={feat_channels} must be divisible by '
                             f'`n_groups`={n_groups}')
        self.channels = self.feat_channels // self.n_groups
        G, C, P_in, P_out = self.n_groups, self.channels, self.in_points, self.out_points
        self.kernel_sizes = per_layer_ints(
            kernel_sizes, self.num_stages, 'kernel_sizes', owner, high=min(C, P_in, P_out),
            high_name='min(feat_channels/n_groups, in_points, out_points)')
        self.kernel_groups = per_layer_ints(kernel_groups, self.num_stages, 'kernel_groups', owner)
        proj_in = G * C * P_out
        self.out_proj_ranks = per_layer_ints(
            out_proj_ranks, self.num_stages, 'out_proj_ranks', owner,
            high=min(proj_in, self.content_dim),
            high_name='min(feat_channels*out_points, content_dim)')
        self.channel_residual = check_choice(channel_residual, ('sequential', 'materialize'),
                                             'channel_residual', owner)
        self.spatial_residual = check_choice(spatial_residual, ('sequential', 'materialize'),
                                             'spatial_residual', owner)

        stages = list(zip(self.kernel_sizes, self.kernel_groups))
        self.parameter_generator = nn.Linear(self.content_dim, G * (C * C + P_in * P_out))
        self.core_generators = nn.ModuleList(
            nn.Linear(self.content_dim, 2 * G * K * k * k) for k, K in stages)
        self.ml = nn.ParameterList(nn.Parameter(torch.empty(G * K, C, k)) for k, K in stages)
        self.mr = nn.ParameterList(nn.Parameter(torch.empty(G * K, k, C)) for k, K in stages)
        self.sl = nn.ParameterList(nn.Parameter(torch.empty(G * K, P_out, k)) for k, K in stages)
        self.sr = nn.ParameterList(nn.Parameter(torch.empty(G * K, k, P_in)) for k, K in stages)
        self.out_proj = LowRankResidualLinearStack(
            proj_in, self.content_dim, self.num_stages, ranks=self.out_proj_ranks, num_terms=1,
            shared_bias=False, private_bias=True, zero_init=out_proj_zero_init)
        self.reset_parameters()

    def reset_parameters(self):
        reset_shared_generator(self.parameter_generator)
        for generator in self.core_generators:
            reset_core_generator(generator)
        with torch.no_grad():
            for factor in [*self.ml, *self.mr, *self.sl, *self.sr]:
                nn.init.kaiming_uniform_(factor)
        self.out_proj.reset_parameters()

    def init_weights(self):
        """Re-apply the LORS init. mmengine's ``BaseModule.init_weights`` calls this on children;
        a stage that re-initialises every ``nn.Linear`` (AdaMixer's xavier loop) must call it
        afterwards, or the zero-initialised generators are lost."""
        self.reset_parameters()

    def factors(self, stage_idx: int):
        """``(ml, mr, sl, sr)`` of a stage viewed with a ``(G, K_i)`` leading pair of dims."""
        i = self._check_stage(stage_idx)
        split = (self.n_groups, self.kernel_groups[i])
        return tuple(p[i].unflatten(0, split) for p in (self.ml, self.mr, self.sl, self.sr))

    def generate(self, query: torch.Tensor, stage_idx: int):
        """Shared matrices and the stage's cores for ``query`` ``[Q, D]``:
        ``M_c [Q,G,C,C]``, ``S_c [Q,G,P_out,P_in]``, ``E^M``, ``E^S`` ``[Q,G,K_i,k_i,k_i]``."""
        i = self._check_stage(stage_idx)
        G, C, P_in, P_out = self.n_groups, self.channels, self.in_points, self.out_points
        k, K = self.kernel_sizes[i], self.kernel_groups[i]
        shared = self.parameter_generator(query).unflatten(-1, (G, C * C + P_in * P_out))
        M_c = shared[..., :C * C].unflatten(-1, (C, C))
        S_c = shared[..., C * C:].unflatten(-1, (P_out, P_in))
        cores = self.core_generators[i](query).unflatten(-1, (2, G, K, k, k))
        core_m, core_s = cores.unbind(-5)
        return M_c, S_c, core_m, core_s

    def forward(self, sampled: torch.Tensor, query: torch.Tensor,
                stage_idx: int) -> torch.Tensor:
        """``sampled`` ``[B, N, G, P_in, C]``, ``query`` ``[B, N, D]`` -> ``[B, N, D]``."""
        i = self._check_stage(stage_idx)
        self._check_inputs(sampled, query)
        B, N = query.shape[:2]
        G, C, P_in, P_out = self.n_groups, self.channels, self.in_points, self.out_points
        M_c, S_c, core_m, core_s = self.generate(query.reshape(B * N, -1), i)
        ml, mr, sl, sr = self.factors(i)
        x = sampled.reshape(B * N, G, P_in, C)

        # adaptive channel mixing: x @ M_i(q)
        if self.channel_residual == 'sequential':
            x = x @ M_c + apply_residual(x, ml, core_m, mr)
        else:
            x = x @ (M_c + materialize_residual(ml, core_m, mr))
        x = F.relu(F.layer_norm(x, (P_in, C)))

        # adaptive spatial mixing: S_i(q) @ x
        if self.spatial_residual == 'materialize':
            x = (S_c + materialize_residual(sl, core_s, sr)) @ x
        else:  # (S_p x)^T = x^T S_p^T with S_p^T = sum_j sr^T E^T sl^T
            x = S_c @ x + apply_residual(x.mT, sr.mT, core_s.mT, sl.mT).mT
        x = F.relu(F.layer_norm(x, (P_out, C)))

        return self.out_proj(x.reshape(B, N, G * P_out * C), i)

    def _check_stage(self, stage_idx: int) -> int:
        if not (0 <= stage_idx < self.num_stages):
            raise IndexError(f'{type(self).__name__}: stage_idx={stage_idx} out of range for '
                             f'num_stages={self.num_stages}')
        return stage_idx

    def _check_inputs(self, sampled: torch.Tensor, query: torch.Tensor):
        expected = (self.n_groups, self.in_points, self.channels)
        if (query.dim() != 3 or query.shape[-1] != self.content_dim or sampled.dim() != 5
                or tuple(sampled.shape[2:]) != expected or sampled.shape[:2] != query.shape[:2]):
            raise ValueError(
                f'{type(self).__name__}: expected sampled [B, N, G, P_in, C] = [B, N, '
                f'{", ".join(map(str, expected))}] and query [B, N, {self.content_dim}], got '
                f'{list(sampled.shape)} and {list(query.shape)}')

    def extra_repr(self) -> str:
        return (f'num_stages={self.num_stages}, content_dim={self.content_dim}, '
                f'n_groups={self.n_groups}, channels={self.channels}, in_points={self.in_points}, '
                f'out_points={self.out_points}, kernel_sizes={self.kernel_sizes}, '
                f'kernel_groups={self.kernel_groups}, out_proj_ranks={self.out_proj_ranks}, '
                f'channel_residual={self.channel_residual!r}, '
                f'spatial_residual={self.spatial_residual!r}')

"""AdaMixer's adaptive mixing with LORS (lors_spec.md sections 2 and 6): the weights the stages
share, and one stage's mixer, which owns its private terms."""
import math
from typing import Optional

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from ..layers import AdaptiveMixing
from .adaptive_lowrank import AdaptiveLowRankResidual
from .checks import check_choice
from .lowrank_linear import LowRankResidualLinear


@MODELS.register_module()
class SharedMixingWeights(BaseModule):
    """The mixing weights all stages of a LORS decoder share, owned here once.

    * ``parameter_generator`` (``share_generator``): ``Linear(D -> G*(C*C + P_in*P_out))``,
      AdaMixer's generator (zero weight, PyTorch-default bias), the ``W_shared(q)`` of LORS^A;
    * ``out_proj`` (``share_out_proj``): ``Linear(G*C*P_out -> D)`` without bias, PyTorch's
      default init, the ``W_shared`` of LORS^T.

    Args:
        query_dim: D. channels: C (per group). n_groups: G. in_points, out_points: P_in, P_out.
        share_generator, share_out_proj: which of the two exists.
    """

    def __init__(self, query_dim: int, channels: int, n_groups: int, in_points: int,
                 out_points: int, share_generator: bool = True, share_out_proj: bool = True):
        super().__init__()
        if share_generator:
            self.parameter_generator = nn.Linear(
                query_dim, n_groups * (channels * channels + in_points * out_points))
        if share_out_proj:
            self.out_proj = nn.Linear(n_groups * channels * out_points, query_dim, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        generator = getattr(self, 'parameter_generator', None)
        if generator is not None:
            nn.init.zeros_(generator.weight)
            bound = 1 / math.sqrt(generator.in_features)
            nn.init.uniform_(generator.bias, -bound, bound)
        out_proj = getattr(self, 'out_proj', None)
        if out_proj is not None:
            out_proj.reset_parameters()


@MODELS.register_module()
class LORSAdaptiveMixing(AdaptiveMixing):
    r"""One decoder stage's adaptive mixing on weights shared with the other stages.

    ``shared`` (:class:`SharedMixingWeights`, a plain reference: the decoder owns it) holds the
    shared generator and/or out-projection weight; this mixer owns its private terms:

    * with a shared generator (LORS^A), ``M_i(q) = M_c(q) + sum_j B E_j(q) A`` and the same for
      ``S`` (:class:`AdaptiveLowRankResidual` ``channel_residual`` ``C x C`` and
      ``spatial_residual`` ``P_out x P_in``, ``generator_num_terms`` terms of
      ``generator_rank``); otherwise its own AdaMixer generator;
    * with a shared out-projection (LORS^T), ``out_proj`` is a :class:`LowRankResidualLinear`
      (``out_proj_num_terms`` terms of ``out_proj_rank``, own bias); otherwise its own Linear.

    The ACM/ASM skeleton is :class:`AdaptiveMixing`'s. How the residuals are applied:
    ``channel_residual='sequential'`` computes ``x @ M_c + ((x B) E) A`` (a per-query ``k x k``
    step between two static GEMMs; no per-query ``C x C`` residual is formed or kept for
    backward), ``'materialize'`` forms ``M_i(q)``; for ``S`` (``spatial_residual``) forming it is
    cheaper at the released dims (``AdaptiveLowRankResidual.macs``). Results agree either way.

    Args:
        in_dim, in_points, out_points, n_groups, query_dim, out_dim: as ``AdaptiveMixing``
            (filled in by the stage).
        shared: the decoder's :class:`SharedMixingWeights`.
        generator_rank, generator_num_terms: LORS^A core size k and terms K.
        out_proj_rank, out_proj_num_terms: LORS^T rank r and terms.
        out_proj_zero_init: the LORS^T factor that starts at zero ('B': released code).
        channel_residual, spatial_residual: 'sequential' or 'materialize'.
    """

    def __init__(self,
                 in_dim: int,
                 in_points: int,
                 out_points: int,
                 n_groups: int,
                 query_dim: int,
                 out_dim: Optional[int] = None,
                 shared: Optional[SharedMixingWeights] = None,
                 generator_rank: int = 16,
                 generator_num_terms: int = 1,
                 out_proj_rank: int = 8,
                 out_proj_num_terms: int = 1,
                 out_proj_zero_init: str = 'B',
                 channel_residual: str = 'sequential',
                 spatial_residual: str = 'materialize',
                 init_cfg=None):
        if not isinstance(shared, SharedMixingWeights):
            raise TypeError('LORSAdaptiveMixing needs the decoder\'s SharedMixingWeights as '
                            f'`shared`, got {type(shared).__name__}; build it through '
                            'AdaMixerLORSDecoder')
        if out_dim not in (None, in_dim):
            raise ValueError(f'out_dim={out_dim} must equal in_dim={in_dim}: LORS mixes '
                             'channels C -> C')
        # read by the build_* hooks, which AdaptiveMixing.__init__ calls
        object.__setattr__(self, 'shared', shared)  # plain reference: the decoder owns it
        self.generator_rank, self.generator_num_terms = generator_rank, generator_num_terms
        self.out_proj_rank, self.out_proj_num_terms = out_proj_rank, out_proj_num_terms
        self.out_proj_zero_init = out_proj_zero_init
        self.channel_strategy = check_choice(channel_residual, ('sequential', 'materialize'),
                                             'channel_residual')
        self.spatial_strategy = check_choice(spatial_residual, ('sequential', 'materialize'),
                                             'spatial_residual')
        super().__init__(in_dim, in_points, out_points, n_groups, query_dim, init_cfg=init_cfg)
        self._check_shared_shapes()

    def build_parameter_generator(self) -> Optional[nn.Module]:
        self.shares_generator = hasattr(self.shared, 'parameter_generator')
        if not self.shares_generator:
            self.channel_residual = self.spatial_residual = None
            return super().build_parameter_generator()
        C, P_in, P_out = self.group_in_dim, self.in_points, self.out_points
        self.channel_residual = self._residual('generator', C, C)
        self.spatial_residual = self._residual('generator', P_out, P_in)
        return None  # the shared one

    def _residual(self, key: str, rows: int, cols: int) -> AdaptiveLowRankResidual:
        try:
            return AdaptiveLowRankResidual(self.query_dim, rows, cols, self.n_groups,
                                           rank=self.generator_rank,
                                           num_terms=self.generator_num_terms)
        except ValueError as error:
            raise ValueError(f'{key}_{error}') from error

    def build_out_proj(self) -> nn.Module:
        shared = getattr(self.shared, 'out_proj', None)
        if shared is None:
            return super().build_out_proj()
        try:
            return LowRankResidualLinear(shared, rank=self.out_proj_rank,
                                         num_terms=self.out_proj_num_terms, bias=True,
                                         zero_init=self.out_proj_zero_init)
        except ValueError as error:
            raise ValueError(f'out_proj_{error}') from error

    def _check_shared_shapes(self) -> None:
        if self.shares_generator and \
                self.shared.parameter_generator.out_features != self.num_generated:
            raise ValueError(f'the shared parameter_generator makes '
                             f'{self.shared.parameter_generator.out_features} values, this '
                             f'stage needs {self.num_generated}: all stages must have the same '
                             'n_groups, in_points, out_points and feat_channels')
        if isinstance(self.out_proj, LowRankResidualLinear) and \
                (self.out_proj.in_features, self.out_proj.out_features) != (self.proj_in_dim,
                                                                            self.query_dim):
            raise ValueError('the shared out_proj does not fit this stage: all stages must '
                             'have the same n_groups, out_points, feat_channels and content_dim')

    def init_weights(self) -> None:
        """The private terms at their LORS init (runs after the stage's xavier re-init of
        every Linear; the shared weights are initialised by their owner)."""
        if self.shares_generator:
            self.channel_residual.reset_parameters()
            self.spatial_residual.reset_parameters()
        else:
            super().init_weights()
        if isinstance(self.out_proj, LowRankResidualLinear):
            self.out_proj.reset_parameters()

    def generate_mixing_params(self, query: Tensor):
        if not self.shares_generator:
            return super().generate_mixing_params(query)
        query = query.reshape(-1, self.query_dim)
        m, s = self.split_mixing_params(self.shared.parameter_generator(query))
        return ((m, self.channel_residual.cores(query)),
                (s, self.spatial_residual.cores(query)))

    def mix_channels(self, x: Tensor, m) -> Tensor:
        if not self.shares_generator:
            return super().mix_channels(x, m)
        m_shared, cores = m
        if self.channel_strategy == 'sequential':
            return x @ m_shared + self.channel_residual.apply_to(x, cores)
        return x @ (m_shared + self.channel_residual.matrix(cores))

    def mix_points(self, x: Tensor, s) -> Tensor:
        if not self.shares_generator:
            return super().mix_points(x, s)
        s_shared, cores = s
        if self.spatial_strategy == 'materialize':
            return (s_shared + self.spatial_residual.matrix(cores)) @ x
        return s_shared @ x + self.spatial_residual.apply_transposed_to(x.mT, cores).mT

    @torch.no_grad()
    def plain_state_dict(self, dtype: torch.dtype = torch.float64) -> dict:
        """This stage as a plain ``AdaptiveMixing`` (same G, P_in, P_out): the residuals are
        affine in the query, so shared generator + residuals is one affine map, and
        ``W + B A`` one Linear. Computed in ``dtype``, returned in the weights' dtype."""
        if not self.shares_generator:
            weight = self.parameter_generator[0].weight
            out = {'parameter_generator.0.weight': weight.detach().clone(),
                   'parameter_generator.0.bias': self.parameter_generator[0].bias.clone()}
        else:
            generator = self.shared.parameter_generator
            weight = generator.weight
            m_w, m_b = self.channel_residual.fold_affine(dtype=dtype)
            s_w, s_b = self.spatial_residual.fold_affine(dtype=dtype)
            m, s = self.split_mixing_params(generator.weight.detach().to(dtype).mT)
            w = self.join_mixing_params(m + m_w.mT.unflatten(-1, m.shape[-3:]),
                                        s + s_w.mT.unflatten(-1, s.shape[-3:])).mT
            m, s = self.split_mixing_params(generator.bias.detach().to(dtype))
            b = self.join_mixing_params(m + m_b.unflatten(-1, m.shape[-3:]),
                                        s + s_b.unflatten(-1, s.shape[-3:]))
            out = {'parameter_generator.0.weight': w.to(weight.dtype),
                   'parameter_generator.0.bias': b.to(weight.dtype)}
        if isinstance(self.out_proj, LowRankResidualLinear):
            proj_w, proj_b = self.out_proj.fold()
            if proj_b is None:
                proj_b = proj_w.new_zeros(self.query_dim)
        else:
            proj_w, proj_b = self.out_proj.weight.clone(), self.out_proj.bias.clone()
        out.update({'out_proj.weight': proj_w, 'out_proj.bias': proj_b})
        return {k: v.contiguous() for k, v in out.items()}

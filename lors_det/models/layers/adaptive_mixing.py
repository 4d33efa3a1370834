"""AdaMixer's adaptive sampling and adaptive mixing.

Two registered modules, so that the mixer can be swapped from a config:

``AdaptiveMixing`` (the mixer; the extension point for LORS)
    ``forward(sampled [B, N, G, P_in, C_in], query [B, N, query_dim]) -> [B, N, query_dim]``
    with ``C_in = in_dim // G``. For every query a Linear ``parameter_generator`` produces, per
    group g, a channel-mixing matrix ``M_g`` [C_in, C_out] and a spatial-mixing matrix ``S_g``
    [P_out, P_in] (layout of the generated vector: group-major, then M row-major, then S
    row-major). Then

    * ACM: ``X_g @ M_g`` -> non-affine LayerNorm over (P_in, C_out) -> ReLU
    * ASM: ``S_g @ .``   -> non-affine LayerNorm over (P_out, C_out) -> ReLU
    * flatten in (group, point, channel) order and apply ``out_proj`` (Linear to query_dim).

    No residual and no output norm here: both stay in ``AdaptiveSamplingMixing``.
    Constructor keywords: ``in_dim, in_points, out_points, n_groups, query_dim, out_dim``;
    ``AdaptiveSamplingMixing`` fills them in, so a replacement mixer must accept them (it may take
    more keywords, given in its ``mixing_cfg``). ``init_weights()`` of the mixer runs *after* the
    stage re-initialises every ``nn.Linear`` (spec section 3), so it has the final word on its own
    parameters.

``AdaptiveSamplingMixing``
    offsets from the query content -> 3D points around the query box -> ``sampling_3d`` ->
    ``mixer(sampled, query)`` -> ``norm(query + mixed)``. The mixer is built from ``mixing_cfg``.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from .box_xyzr import xyzr_to_wh
from .precision import full_precision
from .sampling_3d import make_sample_points, sampling_3d


def _check_divisible(name: str, value: int, n_groups: int) -> None:
    if value % n_groups != 0:
        raise ValueError(f'{name}={value} must be divisible by n_groups={n_groups}')


@MODELS.register_module()
class AdaptiveMixing(BaseModule):
    """Query-conditioned channel mixing (ACM) and spatial mixing (ASM), then ``out_proj``.

    The skeleton (:meth:`forward`) is fixed; subclasses change how the mixing matrices and the
    projection are built and applied, through :meth:`build_parameter_generator`,
    :meth:`build_out_proj`, :meth:`generate_mixing_params`, :meth:`mix_channels` and
    :meth:`mix_points` (LORS: ``lors_det.models.lors.LORSAdaptiveMixing``).

    Args:
        in_dim: channels of the sampled features (all groups together).
        in_points: sampled points per group, P_in.
        out_points: points per group after spatial mixing, P_out.
        n_groups: number of groups G.
        query_dim: query content dimension (input of the generator, output of ``out_proj``).
        out_dim: channels after channel mixing (all groups); defaults to ``in_dim``.
    """

    def __init__(self,
                 in_dim: int,
                 in_points: int,
                 out_points: int,
                 n_groups: int,
                 query_dim: int,
                 out_dim: Optional[int] = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        out_dim = in_dim if out_dim is None else out_dim
        _check_divisible('in_dim', in_dim, n_groups)
        _check_divisible('out_dim', out_dim, n_groups)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.in_points = in_points
        self.out_points = out_points
        self.n_groups = n_groups
        self.query_dim = query_dim
        self.group_in_dim = in_dim // n_groups
        self.group_out_dim = out_dim // n_groups
        self.num_m_params = self.group_in_dim * self.group_out_dim
        self.num_s_params = in_points * out_points
        self.num_generated = n_groups * (self.num_m_params + self.num_s_params)
        self.proj_in_dim = self.group_out_dim * out_points * n_groups

        self.parameter_generator = self.build_parameter_generator()
        self.out_proj = self.build_out_proj()
        self.act = nn.ReLU(inplace=True)
        self.init_weights()

    def build_parameter_generator(self) -> Optional[nn.Module]:
        # Sequential so the checkpoint key is `parameter_generator.0`, as in the official code
        return nn.Sequential(nn.Linear(self.query_dim, self.num_generated))

    def build_out_proj(self) -> nn.Module:
        return nn.Linear(self.proj_in_dim, self.query_dim)

    def init_weights(self) -> None:
        # zero weight: at init M and S come from the bias alone, identical for every query
        nn.init.zeros_(self.parameter_generator[-1].weight)

    def split_mixing_params(self, params: Tensor):
        """Generator output ``[..., G*(C_in*C_out + P_in*P_out)]`` (per group: M row-major,
        then S row-major) -> M ``[..., G, C_in, C_out]``, S ``[..., G, P_out, P_in]``."""
        params = params.unflatten(-1, (self.n_groups, self.num_m_params + self.num_s_params))
        m_params, s_params = params.split([self.num_m_params, self.num_s_params], dim=-1)
        return (m_params.unflatten(-1, (self.group_in_dim, self.group_out_dim)),
                s_params.unflatten(-1, (self.out_points, self.in_points)))

    def join_mixing_params(self, m: Tensor, s: Tensor) -> Tensor:
        """Inverse of :meth:`split_mixing_params`."""
        return torch.cat([m.flatten(-2), s.flatten(-2)], dim=-1).flatten(-2)

    def generate_mixing_params(self, query: Tensor):
        """Per-query mixing matrices: M [Q, G, C_in, C_out] and S [Q, G, P_out, P_in]."""
        return self.split_mixing_params(self.parameter_generator(query.reshape(-1,
                                                                               self.query_dim)))

    def mix_channels(self, x: Tensor, m) -> Tensor:
        """ACM product ``x @ M``: ``x`` [Q, G, P_in, C_in] -> [Q, G, P_in, C_out]."""
        return torch.matmul(x, m)

    def mix_points(self, x: Tensor, s) -> Tensor:
        """ASM product ``S @ x``: ``x`` [Q, G, P_in, C_out] -> [Q, G, P_out, C_out]."""
        return torch.matmul(s, x)

    def forward(self, sampled: Tensor, query: Tensor) -> Tensor:
        batch, num_query, groups, points, channels = sampled.shape
        if (groups, points, channels) != (self.n_groups, self.in_points, self.group_in_dim):
            raise ValueError(
                f'{type(self).__name__} expects sampled features [B, N, {self.n_groups}, '
                f'{self.in_points}, {self.group_in_dim}], got {list(sampled.shape)}')
        # The generated matrices and the products with them stay in float32 under mixed
        # precision: every entry of M and S is a per-query linear form, and their rounding
        # errors compound through x @ M, S @ x and the LayerNorms; out_proj may use bf16/fp16.
        with torch.autocast(sampled.device.type, enabled=False):
            m, s = self.generate_mixing_params(full_precision(query))
            out = full_precision(sampled).reshape(batch * num_query, groups, points, channels)

            out = self.mix_channels(out, m)  # ACM: [B*N, G, P_in, C_out]
            out = self.act(F.layer_norm(out, out.shape[-2:]))
            out = self.mix_points(out, s)  # ASM: [B*N, G, P_out, C_out]
            out = self.act(F.layer_norm(out, out.shape[-2:]))

        return self.out_proj(out.reshape(batch, num_query, -1))

    def plain_state_dict(self) -> dict:
        """The plain ``AdaptiveMixing`` tensors of this mixer (itself, here; a LORS mixer folds
        its shared and private parts)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}


@MODELS.register_module()
class AdaptiveSamplingMixing(BaseModule):
    """Adaptive 3D sampling around each query box followed by the configured mixer.

    Args:
        content_dim: query content dimension D.
        feat_channels: channels of the feature pyramid.
        in_points: sampled points per group, P_in.
        out_points: points per group after spatial mixing, P_out.
        n_groups: number of groups G.
        tau: temperature of the pyramid-level softmax.
        mixing_cfg: config of the mixer; ``in_dim, in_points, out_points, n_groups, query_dim,
            out_dim`` are filled in from the arguments above.
        offset_init: initial xy offsets of the sampling points (the generator's bias):
            'grid' (cell centres of a regular grid in the box; needs a square ``in_points``),
            'uniform' (uniform in the box), or 'auto' (AdaMixer's rule: grid when
            ``in_points`` is a square, else uniform). Comparisons across ``in_points`` need
            one explicit rule.
    """

    def __init__(self,
                 content_dim: int = 256,
                 feat_channels: int = 256,
                 in_points: int = 32,
                 out_points: int = 128,
                 n_groups: int = 4,
                 tau: float = 2.0,
                 mixing_cfg: dict = dict(type='AdaptiveMixing'),
                 offset_init: str = 'auto',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        _check_divisible('feat_channels', feat_channels, n_groups)
        side = math.isqrt(in_points)
        if offset_init not in ('auto', 'grid', 'uniform') or (
                offset_init == 'grid' and side * side != in_points):
            raise ValueError(f"offset_init={offset_init!r} must be 'auto', 'uniform' or 'grid' "
                             f'(grid needs a square in_points, got {in_points})')
        self.offset_init = offset_init
        self.content_dim = content_dim
        self.feat_channels = feat_channels
        self.in_points = in_points
        self.out_points = out_points
        self.n_groups = n_groups
        self.tau = tau

        self.sampling_offset_generator = nn.Sequential(
            nn.Linear(content_dim, n_groups * in_points * 3))
        self.adaptive_mixing = self._build_mixer(mixing_cfg)
        self.norm = nn.LayerNorm(content_dim)
        self.init_weights()

    def _build_mixer(self, mixing_cfg: dict) -> nn.Module:
        filled = dict(in_dim=self.feat_channels, in_points=self.in_points,
                      out_points=self.out_points, n_groups=self.n_groups,
                      query_dim=self.content_dim, out_dim=self.feat_channels)
        cfg = dict(mixing_cfg)
        for key, value in filled.items():
            if key in cfg and cfg[key] != value:
                raise ValueError(f'mixing_cfg.{key}={cfg[key]} contradicts the sampling module '
                                 f'({key}={value}); set it on the decoder stage instead')
        return MODELS.build(cfg, default_args=filled)

    def init_weights(self) -> None:
        generator = self.sampling_offset_generator[-1]
        nn.init.zeros_(generator.weight)
        bias = generator.bias.data.view(self.n_groups, self.in_points, 3)
        side = math.isqrt(self.in_points)
        grid = self.offset_init == 'grid' or (self.offset_init == 'auto'
                                              and side * side == self.in_points)
        if grid:
            # regular side x side grid of cell centres inside the box, x varying fastest
            ticks = (torch.arange(side, dtype=bias.dtype) + 0.5) / side - 0.5
            grid_y, grid_x = torch.meshgrid(ticks, ticks, indexing='ij')
            bias[..., 0] = grid_x.reshape(-1)
            bias[..., 1] = grid_y.reshape(-1)
        else:
            nn.init.uniform_(bias[..., 0:2], -0.5, 0.5)
        # start one octave finer than the box scale
        bias[..., 2] = -1.0
        self.adaptive_mixing.init_weights()

    def forward(self, feats: Sequence[Tensor], query: Tensor, xyzr: Tensor,
                featmap_strides: Sequence[int]) -> Tensor:
        """feats: pyramid maps [B, C, H_l, W_l]; query [B, N, D]; xyzr [B, N, 4] -> [B, N, D]."""
        batch, num_query = query.shape[:2]
        offsets = self.sampling_offset_generator(query).view(batch, num_query, self.n_groups,
                                                             self.in_points, 3)
        points = make_sample_points(offsets, xyzr, xyzr_to_wh(xyzr))
        sampled = sampling_3d(points, feats, featmap_strides, tau=self.tau)
        mixed = self.adaptive_mixing(sampled, query)
        return self.norm(query + mixed)

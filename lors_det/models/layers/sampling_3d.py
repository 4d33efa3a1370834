"""AdaMixer's adaptive 3D feature sampling: (x, y) in pixels plus a continuous pyramid level z.

Every sampling point carries ``(x, y, z)``. ``z`` is a log2 scale; its weight on pyramid level l
(stride ``s_l``) is ``softmax_l(-(z - log2 s_l)**2 / tau)``. The point is sampled bilinearly on
every level (``align_corners=False``, zero padding, coordinates normalised by the padded extent
``W_l * s_l``, ``H_l * s_l``) and the samples are summed with those weights.

Channels and points are split into ``G`` groups: group g samples only channel slice
``[g*C/G, (g+1)*C/G)`` at its own points. The groups are folded into the batch so that each level
needs a single ``grid_sample`` call.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import full_precision


def pyramid_level_weights(z: Tensor, featmap_strides: Sequence[int], tau: float = 2.0) -> Tensor:
    """Soft assignment of log2 scales ``z`` [...] to pyramid levels, [..., num_levels]."""
    log2_strides = torch.tensor([float(s) for s in featmap_strides], dtype=z.dtype,
                                device=z.device).log2()
    logits = -(z[..., None] - log2_strides).pow(2) / tau
    return logits.softmax(dim=-1)


def make_sample_points(offsets: Tensor, xyzr: Tensor, box_wh: Tensor) -> Tensor:
    """Turn per-query offsets into absolute 3D sampling points.

    Args:
        offsets: [B, N, G, P, 3] offsets (ox, oy, oz); ox/oy are in units of the box width/height,
            oz is in octaves.
        xyzr: [B, N, 4] query positions.
        box_wh: [B, N, 2] the query box width and height (decoded from ``xyzr``).

    Returns:
        [B, N, G, P, 3]: ``(x + ox*w, y + oy*h, z + oz)``.
    """
    xy = xyzr[:, :, None, None, 0:2] + offsets[..., 0:2] * box_wh[:, :, None, None, :]
    z = xyzr[:, :, None, None, 2:3] + offsets[..., 2:3]
    return torch.cat([xy, z], dim=-1)


def sampling_3d(points: Tensor, feats: Sequence[Tensor], featmap_strides: Sequence[int],
                tau: float = 2.0) -> Tensor:
    """Sample a feature pyramid at 3D points, separately per channel group.

    Args:
        points: [B, N, G, P, 3] absolute ``(x, y, z)`` (pixels of the padded input, log2 scale).
        feats: one [B, C, H_l, W_l] map per level; C must be divisible by G.
        featmap_strides: stride of every level.
        tau: temperature of the level softmax.

    Returns:
        [B, N, G, P, C // G] level-weighted bilinear samples (float32 under autocast).

    Runs in float32 under mixed precision: bilinear weights are differences of sub-pixel
    positions, which bfloat16's 8-bit mantissa rounds to a few positions per pixel.
    """
    with torch.autocast(points.device.type, enabled=False):
        return _sampling_3d(full_precision(points), [full_precision(f) for f in feats],
                            featmap_strides, tau)


def _sampling_3d(points: Tensor, feats: Sequence[Tensor], featmap_strides: Sequence[int],
                 tau: float) -> Tensor:
    if len(feats) != len(featmap_strides):
        raise ValueError(f'sampling_3d got {len(feats)} feature maps but featmap_strides='
                         f'{list(featmap_strides)}')
    batch, num_query, groups, num_points, _ = points.shape
    channels = feats[0].size(1)
    if channels % groups != 0:
        raise ValueError(f'feature channels {channels} are not divisible by n_groups={groups}')
    group_channels = channels // groups

    # [B, N, G, P, ...] -> [B*G, N, P, ...]: one grid_sample "image" per (batch, group)
    points = points.permute(0, 2, 1, 3, 4).reshape(batch * groups, num_query, num_points, 3)
    level_weights = pyramid_level_weights(points[..., 2], featmap_strides, tau)  # [BG, N, P, L]
    xy = points[..., 0:2]

    out = None
    for level, (feat, stride) in enumerate(zip(feats, featmap_strides)):
        height, width = feat.shape[-2:]
        extent = xy.new_tensor([width * stride, height * stride])
        grid = xy / extent * 2.0 - 1.0
        value = feat.reshape(batch * groups, group_channels, height, width)
        sampled = F.grid_sample(value, grid, mode='bilinear', padding_mode='zeros',
                                align_corners=False)  # [BG, Cg, N, P]
        weighted = sampled * level_weights[..., level].unsqueeze(1)
        out = weighted if out is None else out + weighted

    # [B*G, Cg, N, P] -> [B, N, G, P, Cg]
    out = out.view(batch, groups, group_channels, num_query, num_points)
    return out.permute(0, 3, 1, 4, 2).contiguous()

"""Adaptive 3D sampling on synthetic feature maps whose values are affine in the pixel index.

Bilinear interpolation (align_corners=False) reproduces an affine map f(j, i) = a*j + b*i + d
exactly at pixel coordinate (x/stride - 0.5, y/stride - 0.5) as long as the point is inside the
map, so every expected value can be written down in closed form.
"""
import math

import torch

from lors_det.models.layers import make_sample_points, pyramid_level_weights, sampling_3d
from _adamixer_helpers import mmdet_default_scope  # noqa: F401  (autouse fixture)

STRIDES = (4, 8, 16, 32)
PAD_H, PAD_W = 128, 96  # padded input; maps are 32x24, 16x12, 8x6, 4x3


def _affine_maps(coef):
    """coef [B, C, 3] -> per level [B, C, H, W] with value a*j + b*i + d (j col, i row)."""
    maps = []
    for s in STRIDES:
        h, w = PAD_H // s, PAD_W // s
        jj = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w)
        ii = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1)
        a, b, d = (coef[..., k].reshape(*coef.shape[:2], 1, 1) for k in range(3))
        maps.append(a * jj + b * ii + d)
    return maps


def _level_weights_ref(z):
    logits = [-(z - math.log2(s)) ** 2 / 2.0 for s in STRIDES]
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    return [v / sum(e) for v in e]


def test_level_weights_match_softmax_formula():
    z = torch.tensor([1.0, 2.0, 3.3, 4.5, 7.0, -1.0], dtype=torch.float64)
    weights = pyramid_level_weights(z, STRIDES, tau=2.0)
    for k in range(z.numel()):
        torch.testing.assert_close(weights[k], torch.tensor(_level_weights_ref(z[k].item()),
                                                            dtype=torch.float64))


def test_sampling_matches_closed_form_per_group():
    torch.manual_seed(0)
    batch, num_query, groups, points, group_ch = 2, 3, 2, 5, 3
    channels = groups * group_ch
    coef = torch.randn(batch, channels, 3, dtype=torch.float64)
    feats = _affine_maps(coef)
    # inside every level: x in [16, 80] (W*s = 96, coarsest needs 16 <= x <= 80), y in [16, 112]
    xy = torch.stack([16 + 64 * torch.rand(batch, num_query, groups, points, dtype=torch.float64),
                      16 + 96 * torch.rand(batch, num_query, groups, points, dtype=torch.float64)],
                     dim=-1)
    z = 1.5 + 4 * torch.rand(batch, num_query, groups, points, 1, dtype=torch.float64)
    pts = torch.cat([xy, z], dim=-1)

    out = sampling_3d(pts, feats, STRIDES, tau=2.0)
    assert out.shape == (batch, num_query, groups, points, group_ch)

    expected = torch.zeros_like(out)
    for b in range(batch):
        for n in range(num_query):
            for g in range(groups):
                for p in range(points):
                    x, y, zz = pts[b, n, g, p].tolist()
                    w = _level_weights_ref(zz)
                    for c in range(group_ch):
                        a, bb, d = coef[b, g * group_ch + c].tolist()
                        expected[b, n, g, p, c] = sum(
                            w[l] * (a * (x / s - 0.5) + bb * (y / s - 0.5) + d)
                            for l, s in enumerate(STRIDES))
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_sampling_uses_zero_padding_and_padded_extent():
    coef = torch.tensor([[[1.0, 0.0, 5.0]]], dtype=torch.float64)  # f = j + 5
    feats = _affine_maps(coef)
    # far outside: zeros on every level
    pts = torch.tensor([-500., 60., 3.], dtype=torch.float64).view(1, 1, 1, 1, 3)
    assert sampling_3d(pts, feats, STRIDES).abs().max().item() == 0.0
    # z exactly on the stride-8 level, point on a pixel centre of that level: x = 8*(2+0.5)
    pts = torch.tensor([20., 60., 3.], dtype=torch.float64).view(1, 1, 1, 1, 3)
    w = _level_weights_ref(3.0)
    expected = sum(w[l] * (20. / s - 0.5 + 5.0) for l, s in enumerate(STRIDES))
    torch.testing.assert_close(sampling_3d(pts, feats, STRIDES).item(), expected)


def test_make_sample_points_hand_case():
    xyzr = torch.tensor([[[100., 50., 3., 1.]]], dtype=torch.float64)  # w = 8/sqrt2, h = 8*sqrt2
    wh = torch.tensor([[[8 / math.sqrt(2), 8 * math.sqrt(2)]]], dtype=torch.float64)
    offsets = torch.tensor([0.5, -0.25, -1.0], dtype=torch.float64).view(1, 1, 1, 1, 3)
    pts = make_sample_points(offsets, xyzr, wh)
    expected = torch.tensor([100 + 2 * math.sqrt(2), 50 - 2 * math.sqrt(2), 2.0],
                            dtype=torch.float64)
    torch.testing.assert_close(pts.view(3), expected)

"""AdaMixer's positional vector ``xyzr`` and the sinusoidal embedding of it.

A query box is stored as ``(x, y, z, r)`` in absolute pixels of the network input:

* ``x, y``: box centre;
* ``z = log2(sqrt(w * h))``: log2 of the geometric-mean side length (the "scale");
* ``r = log2(h / w)``: log2 aspect ratio.

Decoding inverts this exactly: ``s = 2**z, w = s * 2**(-r/2), h = s * 2**(r/2)``.
"""
import torch
from torch import Tensor


def bbox_xyxy_to_xyzr(bboxes: Tensor) -> Tensor:
    """Convert absolute ``(x1, y1, x2, y2)`` boxes [..., 4] to ``(x, y, z, r)`` [..., 4]."""
    x1, y1, x2, y2 = bboxes.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    x = 0.5 * (x1 + x2)
    y = 0.5 * (y1 + y2)
    z = 0.5 * torch.log2(w * h)
    r = torch.log2(h / w)
    return torch.stack([x, y, z, r], dim=-1)


def xyzr_to_bbox_xyxy(xyzr: Tensor) -> Tensor:
    """Convert ``(x, y, z, r)`` [..., 4] to absolute ``(x1, y1, x2, y2)`` [..., 4]."""
    wh = xyzr_to_wh(xyzr)
    half = 0.5 * wh
    centre = xyzr[..., 0:2]
    return torch.cat([centre - half, centre + half], dim=-1)


def xyzr_to_wh(xyzr: Tensor) -> Tensor:
    """Box width and height [..., 2] of ``(x, y, z, r)`` [..., 4]."""
    scale = torch.pow(2.0, xyzr[..., 2:3])
    r = xyzr[..., 3:4]
    ratio = torch.pow(2.0, torch.cat([-0.5 * r, 0.5 * r], dim=-1))
    return scale * ratio


def refine_xyzr(xyzr: Tensor, delta: Tensor) -> Tensor:
    """Apply a stage's ``(dx, dy, dz, dr)`` prediction to ``xyzr``.

    Both centre offsets are scaled by the geometric-mean size ``2**z`` (not by w and h
    separately), z and r are shifted additively; there is no clamping.
    """
    scale = torch.pow(2.0, xyzr[..., 2:3])
    new_xy = xyzr[..., 0:2] + delta[..., 0:2] * scale
    new_zr = xyzr[..., 2:4] + delta[..., 2:4]
    return torch.cat([new_xy, new_zr], dim=-1)


def xyzr_position_embedding(xyzr: Tensor, num_feats: int,
                            temperature: float = 10000.) -> Tensor:
    """Sinusoidal embedding of ``xyzr`` [..., 4] into [..., 4 * num_feats].

    x and y are divided by 1000 (pixel units), z and r are used as they are. For every coordinate
    v and k = 0 .. num_feats/2 - 1 the pair ``sin(v / T**(2k/num_feats)), cos(...)`` is emitted,
    interleaved; the four coordinate blocks are concatenated in the order x, y, z, r.
    """
    if num_feats % 2 != 0:
        raise ValueError(f'num_feats of the xyzr position embedding must be even, got {num_feats}')
    unit = xyzr.new_tensor([1000., 1000., 1., 1.])
    coords = xyzr / unit
    k = torch.arange(num_feats // 2, dtype=xyzr.dtype, device=xyzr.device)
    inv_freq = temperature ** (-2.0 * k / num_feats)          # [num_feats/2]
    angles = coords[..., None] * inv_freq                       # [..., 4, num_feats/2]
    emb = torch.stack([angles.sin(), angles.cos()], dim=-1)     # [..., 4, num_feats/2, 2]
    return emb.flatten(-3)

"""One AdaMixer decoder stage.

Forward (post-norm everywhere), with query content [B, N, D] and positions xyzr [B, N, 4]:

1. position-aware self-attention: ``q = content + PE(xyzr)`` is query, key, value *and* residual;
   the additive attention mask is ``log(IoF + 1e-7) * iof_tau[head]``; then ``attention_norm``;
2. ``sampling_n_mixing``: adaptive 3D sampling around each query box, the configurable mixer
   (``mixing_cfg``), residual and ``norm``;
3. FFN with its internal residual, then ``ffn_norm``;
4. cls branch (``cls_fcs`` + ``fc_cls``, sigmoid logits, no background logit) and reg branch
   (``reg_fcs`` + ``fc_reg``) giving the xyzr delta.

The class subclasses mmdet's ``DIIHead`` only to reuse its ``loss_and_target`` / ``get_targets``
(the same maths as AdaMixer); ``DIIHead.__init__`` (which would build a DynamicConv) is skipped and
``BBoxHead.__init__`` is called directly.
"""
import math
from typing import Sequence, Tuple

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmdet.models.roi_heads.bbox_heads import BBoxHead, DIIHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.model import BaseModule
from torch import Tensor, nn

from ...layers import AdaptiveSamplingMixing, xyzr_position_embedding, xyzr_to_bbox_xyxy


def _branch(num_fcs: int, dim: int) -> nn.ModuleList:
    """[Linear(dim, dim), LN, ReLU] x num_fcs, keys ``{3i}`` (Linear) and ``{3i+1}`` (LN)."""
    layers = nn.ModuleList()
    for _ in range(num_fcs):
        layers.append(nn.Linear(dim, dim, bias=True))
        layers.append(build_norm_layer(dict(type='LN'), dim)[1])
        layers.append(build_activation_layer(dict(type='ReLU', inplace=True)))
    return layers


@MODELS.register_module()
class AdaMixerDecoderStage(DIIHead):
    """AdaMixer decoder stage.

    Args:
        num_classes: number of object classes (sigmoid classification).
        num_ffn_fcs: Linear layers in the FFN.
        num_heads: self-attention heads (one ``iof_tau`` per head).
        num_cls_fcs / num_reg_fcs: [Linear, LN, ReLU] blocks before ``fc_cls`` / ``fc_reg``.
        feedforward_channels: FFN hidden size.
        content_dim: query content dimension D.
        feat_channels: channels of the feature pyramid.
        dropout: dropout in attention and FFN.
        in_points: sampled points per group, P_in.
        out_points: points per group after spatial mixing, P_out.
        n_groups: sampling/mixing groups G.
        sampling_tau: temperature of the pyramid-level softmax.
        sampling_offset_init: initial sampling offsets, 'auto' / 'grid' / 'uniform' (see
            ``AdaptiveSamplingMixing.offset_init``).
        mixing_cfg: the mixer built by ``AdaptiveSamplingMixing`` (``in_dim, in_points,
            out_points, n_groups, query_dim, out_dim`` are filled in).
        ffn_act_cfg: FFN activation.
        loss_cls, loss_bbox, loss_iou: focal, L1 (on img-normalised xyxy) and GIoU losses.
        **kwargs: further ``BBoxHead`` arguments (e.g. the placeholder ``bbox_coder``).
    """

    def __init__(self,
                 num_classes: int = 80,
                 num_ffn_fcs: int = 2,
                 num_heads: int = 8,
                 num_cls_fcs: int = 1,
                 num_reg_fcs: int = 1,
                 feedforward_channels: int = 2048,
                 content_dim: int = 256,
                 feat_channels: int = 256,
                 dropout: float = 0.0,
                 in_points: int = 32,
                 out_points: int = 128,
                 n_groups: int = 4,
                 sampling_tau: float = 2.0,
                 sampling_offset_init: str = 'auto',
                 mixing_cfg: dict = dict(type='AdaptiveMixing'),
                 ffn_act_cfg: dict = dict(type='ReLU', inplace=True),
                 loss_cls: dict = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                                       loss_weight=2.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=5.0),
                 loss_iou: dict = dict(type='GIoULoss', loss_weight=2.0),
                 init_cfg=None,
                 **kwargs) -> None:
        if init_cfg is not None:
            raise ValueError('AdaMixerDecoderStage defines its own init (init_weights); '
                             f'init_cfg must be None, got {init_cfg}')
        if content_dim % 4 != 0:
            raise ValueError(f'content_dim={content_dim} must be divisible by 4 (xyzr PE)')
        # Skip DIIHead.__init__ (DynamicConv); the 1x1 "RoI" keeps BBoxHead's temporary fc tiny.
        BBoxHead.__init__(
            self,
            num_classes=num_classes,
            in_channels=content_dim,
            roi_feat_size=1,
            reg_decoded_bbox=True,
            reg_class_agnostic=True,
            loss_cls=loss_cls,
            loss_bbox=loss_bbox,
            init_cfg=init_cfg,
            **kwargs)
        self.loss_iou = MODELS.build(loss_iou)
        self.fp16_enabled = False
        self.content_dim = content_dim
        self.feat_channels = feat_channels
        self.num_heads = num_heads
        self.in_points = in_points
        self.out_points = out_points
        self.n_groups = n_groups

        # dropout_layer given explicitly: mmcv 2.1's MultiheadAttention writes a deprecated
        # `dropout` argument (mmdet's DETR configs pass one) into its *default* dropout_layer
        # dict, which every later default-built attention in the process would then share
        self.attention = MultiheadAttention(content_dim, num_heads, attn_drop=dropout,
                                            dropout_layer=dict(type='Dropout', drop_prob=0.),
                                            batch_first=True)
        self.attention_norm = build_norm_layer(dict(type='LN'), content_dim)[1]
        self.iof_tau = nn.Parameter(torch.ones(num_heads))

        self.sampling_n_mixing = AdaptiveSamplingMixing(
            content_dim=content_dim,
            feat_channels=feat_channels,
            in_points=in_points,
            out_points=out_points,
            n_groups=n_groups,
            tau=sampling_tau,
            offset_init=sampling_offset_init,
            mixing_cfg=mixing_cfg)

        self.ffn = FFN(embed_dims=content_dim, feedforward_channels=feedforward_channels,
                       num_fcs=num_ffn_fcs, act_cfg=ffn_act_cfg, ffn_drop=dropout)
        self.ffn_norm = build_norm_layer(dict(type='LN'), content_dim)[1]

        self.cls_fcs = _branch(num_cls_fcs, content_dim)
        self.reg_fcs = _branch(num_reg_fcs, content_dim)
        num_cls_out = num_classes if self.loss_cls.use_sigmoid else num_classes + 1
        self.fc_cls = nn.Linear(content_dim, num_cls_out)  # replaces BBoxHead's
        self.fc_reg = nn.Linear(content_dim, 4)  # xyzr delta

    def init_weights(self) -> None:
        """AdaMixer's init (spec section 3); it runs after everything the parents apply."""
        # BBoxHead's init_cfg and the children's own init_weights (mmengine bookkeeping)
        BaseModule.init_weights(self)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # includes the MHA out_proj and the mixer
                module.reset_parameters()
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        attn = self.attention.attn
        nn.init.xavier_uniform_(attn.in_proj_weight)  # PyTorch's own MHA init
        nn.init.zeros_(attn.in_proj_bias)

        if self.loss_cls.use_sigmoid:
            prior_prob = 0.01
            nn.init.constant_(self.fc_cls.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.zeros_(self.fc_reg.weight)
        nn.init.zeros_(self.fc_reg.bias)
        nn.init.uniform_(self.iof_tau, 0.0, 4.0)
        # last: the offset generator and the mixer's own init have the final word
        self.sampling_n_mixing.init_weights()

    def attention_bias(self, xyzr: Tensor) -> Tensor:
        """Additive attention mask [B * heads, N, N] from the log IoF of the query boxes."""
        with torch.no_grad():
            boxes = xyzr_to_bbox_xyxy(xyzr)
            iof = bbox_overlaps(boxes, boxes, mode='iof')  # [B, N, N], row i: |i & j| / |i|
            log_iof = (iof + 1e-7).log()
        return (log_iof[:, None] * self.iof_tau[None, :, None, None]).flatten(0, 1)

    def forward(self, feats: Sequence[Tensor], xyzr: Tensor, content: Tensor,
                featmap_strides: Sequence[int]) -> Tuple[Tensor, Tensor, Tensor]:
        """Returns ``cls_score [B, N, K]``, ``xyzr_delta [B, N, 4]`` and ``content [B, N, D]``."""
        with torch.no_grad():
            pe = xyzr_position_embedding(xyzr, self.content_dim // 4)
        attn_mask = self.attention_bias(xyzr)

        query = content + pe  # query = key = value = residual
        content = self.attention_norm(self.attention(query, attn_mask=attn_mask))
        content = self.sampling_n_mixing(feats, content, xyzr, featmap_strides)
        content = self.ffn_norm(self.ffn(content))

        cls_feat = content
        for layer in self.cls_fcs:
            cls_feat = layer(cls_feat)
        reg_feat = content
        for layer in self.reg_fcs:
            reg_feat = layer(reg_feat)
        return self.fc_cls(cls_feat), self.fc_reg(reg_feat), content

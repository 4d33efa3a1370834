"""AdaMixer's ``ChannelMapping`` neck: 1x1 conv per level and one shared GroupNorm.

Not mmdet's ``ChannelMapper``: that one has a norm (and by default a 3x3 conv and ReLU) inside
every level's ConvModule. Here each level gets a plain 1x1 conv with bias and no activation, and a
single ``GroupNorm`` (the same affine parameters) is applied to every output level. Checkpoint keys:
``lateral_convs.{i}.conv.{weight,bias}`` and ``gn_out.{weight,bias}``.
"""
from typing import List, Sequence, Tuple

from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class ChannelMapping(BaseModule):
    """Map every backbone level to ``out_channels`` and normalise with one shared GroupNorm.

    Args:
        in_channels: channels of the backbone outputs.
        out_channels: channels of every output level.
        num_outs: number of output levels. Levels beyond the mapped inputs are made by
            ``AvgPool2d(3, 2, 1)`` on the previous output (before the GroupNorm).
        start_level: first backbone level to use.
        num_groups: groups of the shared GroupNorm.
        init_cfg: Xavier-uniform on the convs (bias 0), as in the official code. This is the
            effective init: ``ConvModule`` applies Kaiming only in its constructor, and the neck's
            ``init_weights`` never reaches ``ConvModule.init_weights`` because the convs sit in a
            plain ``nn.ModuleList`` (mmcv 1.3.3 and mmengine both visit direct children only).
            With ``init_cfg=None`` the constructor-time Kaiming-normal (fan_out) init is kept.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 num_groups: int = 32,
                 init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')):
        super().__init__(init_cfg=init_cfg)
        in_channels = list(in_channels)
        num_mapped = len(in_channels) - start_level
        if not 0 <= start_level < len(in_channels):
            raise ValueError(f'start_level={start_level} is out of range for '
                             f'in_channels={in_channels}')
        if num_outs < num_mapped:
            raise ValueError(f'num_outs={num_outs} is smaller than the {num_mapped} mapped levels '
                             f'(in_channels={in_channels}, start_level={start_level})')
        if out_channels % num_groups != 0:
            raise ValueError(f'out_channels={out_channels} is not divisible by '
                             f'num_groups={num_groups}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level

        self.lateral_convs = nn.ModuleList([
            ConvModule(c, out_channels, 1, conv_cfg=None, norm_cfg=None, act_cfg=None,
                       inplace=False) for c in in_channels[start_level:]
        ])
        self.extra_pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.gn_out = nn.GroupNorm(num_groups, out_channels)

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'ChannelMapping got {len(inputs)} inputs but in_channels has '
                             f'{len(self.in_channels)} entries')
        outs: List[Tensor] = [
            conv(inputs[self.start_level + i]) for i, conv in enumerate(self.lateral_convs)
        ]
        while len(outs) < self.num_outs:
            outs.append(self.extra_pool(outs[-1]))
        return tuple(self.gn_out(out) for out in outs)

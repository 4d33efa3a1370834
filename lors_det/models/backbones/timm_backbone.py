"""TimmBackbone: a timm model as an mmdet backbone returning multi-scale feature maps."""
import os
from typing import Optional, Sequence

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule


@MODELS.register_module()
class TimmBackbone(BaseModule):
    """``timm.create_model(model_name, features_only=True, ...)`` as an mmdet backbone.

    Args:
        model_name (str): a timm model name, e.g. ``'resnet18'``, ``'convnext_tiny'``.
        out_indices (Sequence[int], optional): timm feature levels to return (``resnet*``:
            0 is stride 2, 1..4 are C2..C5). None returns every level timm offers.
        pretrained (bool): let timm fetch its pretrained weights (network access). Defaults to
            False.
        checkpoint (str, optional): a local timm-format weight file (state dict of the full timm
            model, optionally under 'state_dict' / 'model'); loaded through timm, so classifier
            removal and timm's key filters apply.
        in_channels (int): input channels. Defaults to 3.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``, ``img_size``).

    Attributes:
        out_channels (list[int]) / strides (list[int]): per returned level, for neck configs.
    """

    def __init__(self, model_name: str, out_indices: Optional[Sequence[int]] = None,
                 pretrained: bool = False, checkpoint: Optional[str] = None,
                 in_channels: int = 3, init_cfg: dict = None, **kwargs) -> None:
        import timm  # local import: only this backbone needs timm
        super().__init__(init_cfg=init_cfg)
        if not timm.is_model(model_name):
            raise ValueError(f'TimmBackbone: unknown timm model_name {model_name!r}')
        if checkpoint is not None:
            if not os.path.isfile(checkpoint):
                raise FileNotFoundError(f'TimmBackbone checkpoint {checkpoint!r} does not exist')
            pretrained = True
            kwargs['pretrained_cfg_overlay'] = dict(file=checkpoint)
        if out_indices is not None:
            kwargs['out_indices'] = tuple(out_indices)
        self.model = timm.create_model(model_name, pretrained=pretrained, features_only=True,
                                       in_chans=in_channels, **kwargs)
        self.model_name = model_name
        self.out_indices = tuple(self.model.feature_info.out_indices)
        self.out_channels = list(self.model.feature_info.channels())
        self.strides = list(self.model.feature_info.reduction())

    def init_weights(self) -> None:
        # timm initialised (and maybe loaded) the model at creation; only an explicit init_cfg
        # of this wrapper runs here, so a runner-level init never re-randomises loaded weights.
        if self.init_cfg:
            super().init_weights()
        self._is_init = True

    def forward(self, x: torch.Tensor):
        return tuple(self.model(x))

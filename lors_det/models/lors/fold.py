"""Fold a trained LORS AdaMixer decoder into plain per-stage AdaMixer weights.

Every :class:`~.LORSAdaptiveMixing` returns its own plain ``AdaptiveMixing`` tensors
(``plain_state_dict``: the LORS^A residuals are affine in the query, so shared generator plus
residuals is one Linear; ``W + B A`` is one Linear). The folded checkpoint loads into a plain
:class:`AdaMixerDecoder` with the LORS config's stage settings (e.g. ``n_groups=2,
in_points=64``) and computes the same outputs up to float rounding. It skips the core
generators and per-query residuals (fewer FLOPs) but stores six dense generators and
projections again (135.5 M instead of 35.3 M decoder parameters for the R-50 model).
"""
import copy
from collections import OrderedDict

import torch
import torch.nn as nn

from .lors_adaptive_mixing import LORSAdaptiveMixing, SharedMixingWeights


@torch.no_grad()
def fold_lors_state_dict(model: nn.Module) -> 'OrderedDict[str, torch.Tensor]':
    """``model.state_dict()`` with every LORS mixer replaced by its plain weights and the
    shared weights dropped; loads into the model of :func:`plain_adamixer_model_cfg`."""
    mixers = {name: m for name, m in model.named_modules() if isinstance(m, LORSAdaptiveMixing)}
    if not mixers:
        raise ValueError(f'{type(model).__name__} has no LORSAdaptiveMixing: nothing to fold')
    dropped = tuple(f'{name}.' for name, m in model.named_modules()
                    if isinstance(m, (LORSAdaptiveMixing, SharedMixingWeights)))
    state = OrderedDict((k, v) for k, v in model.state_dict().items()
                        if not k.startswith(dropped))
    for name, mixer in mixers.items():
        state.update((f'{name}.{k}', v) for k, v in mixer.plain_state_dict().items())
    return state


def plain_adamixer_model_cfg(model_cfg):
    """The plain AdaMixer model config that a folded checkpoint of ``model_cfg`` loads into:
    ``roi_head.type`` ``AdaMixerDecoder`` without ``lors_cfg``; stage dims unchanged."""
    cfg = copy.deepcopy(model_cfg)
    roi_head = cfg['roi_head']
    if roi_head.get('type') != 'AdaMixerLORSDecoder':
        raise ValueError(f"model.roi_head.type must be 'AdaMixerLORSDecoder' to fold, got "
                         f"{roi_head.get('type')!r}")
    roi_head['type'] = 'AdaMixerDecoder'
    roi_head.pop('lors_cfg', None)
    return cfg

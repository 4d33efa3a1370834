"""LORS (CVPR 2024): low-rank residual sharing across stacked layers.

* :class:`LowRankResidualLinear` - LORS^T: one layer of a stack sharing a dense weight.
* :class:`AdaptiveLowRankResidual` - LORS^A: one layer's private residual of query-generated
  matrices.
* :class:`SharedMixingWeights`, :class:`LORSAdaptiveMixing` - AdaMixer's adaptive mixing with
  both: the weights the decoder shares, and one stage's mixer with its private terms.
* :mod:`.fold` - a trained LORS decoder as plain per-stage AdaMixer weights.
* :class:`AdaptiveLowRankGenerator` - LORS^A on a query-conditioned parameter generator
  (Sparse R-CNN's DynamicConv).
* :mod:`.stack_sharing` - LORS on any stack of an mmdet model by config (``apply_lors``,
  ``fold_lors_stacks``), used by the ``LORSSharing`` model type.
"""
from .adaptive_lowrank import AdaptiveLowRankResidual
from .adaptive_lowrank_generator import AdaptiveLowRankGenerator
from .fold import fold_lors_state_dict, plain_adamixer_model_cfg
from .lors_adaptive_mixing import LORSAdaptiveMixing, SharedMixingWeights
from .lowrank_linear import LowRankResidualLinear
from .stack_sharing import (LORSSharedStack, apply_lors, count_stack_parameters,
                            fold_lors_stacks)

__all__ = [
    'AdaptiveLowRankGenerator', 'LORSSharedStack', 'apply_lors', 'count_stack_parameters',
    'fold_lors_stacks', 'AdaptiveLowRankResidual', 'LORSAdaptiveMixing', 'LowRankResidualLinear',
    'SharedMixingWeights', 'fold_lors_state_dict', 'plain_adamixer_model_cfg'
]

"""LORS (CVPR 2024): low-rank residual sharing across stacked layers.

* :class:`LowRankResidualLinearStack` - LORS^T for any stack of N same-shape linear layers.
* :class:`AdaptiveLowRankResidualGenerator` - LORS^A for N layers of query-generated matrices.
* :class:`LORSAdaptiveMixingStack` - AdaMixer's adaptive mixing for all decoder stages with both.
* :class:`LORSStageMixer` - one decoder stage's parameter-free view of that shared stack.
* :mod:`.fold` - folding a trained stack into plain per-stage AdaMixer weights.
"""
from .adaptive_lowrank_generator import AdaptiveLowRankResidualGenerator
from .fold import fold_lors_mixing_stack, fold_lors_state_dict, plain_adamixer_model_cfg
from .lors_adaptive_mixing import LORSAdaptiveMixingStack
from .lors_stage_mixer import LORSStageMixer
from .lowrank_residual_linear import LowRankResidualLinearStack

__all__ = [
    'AdaptiveLowRankResidualGenerator', 'LORSAdaptiveMixingStack', 'LORSStageMixer',
    'LowRankResidualLinearStack', 'fold_lors_mixing_stack', 'fold_lors_state_dict',
    'plain_adamixer_model_cfg'
]

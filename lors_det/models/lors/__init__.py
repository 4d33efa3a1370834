"""LORS (CVPR 2024): low-rank residual sharing across stacked layers.

* :class:`LowRankResidualLinearStack` - LORS^T for any stack of N same-shape linear layers.
* :class:`AdaptiveLowRankResidualGenerator` - LORS^A for N layers of query-generated matrices.
* :class:`LORSAdaptiveMixingStack` - AdaMixer's adaptive mixing for all decoder stages with both.
"""
from .adaptive_lowrank_generator import AdaptiveLowRankResidualGenerator
from .lors_adaptive_mixing import LORSAdaptiveMixingStack
from .lowrank_residual_linear import LowRankResidualLinearStack

__all__ = [
    'AdaptiveLowRankResidualGenerator', 'LORSAdaptiveMixingStack', 'LowRankResidualLinearStack'
]

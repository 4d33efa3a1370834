from .adaptive_mixing import AdaptiveMixing, AdaptiveSamplingMixing
from .box_xyzr import (bbox_xyxy_to_xyzr, refine_xyzr, xyzr_position_embedding,
                       xyzr_to_bbox_xyxy, xyzr_to_wh)
from .sampling_3d import make_sample_points, pyramid_level_weights, sampling_3d

__all__ = [
    'AdaptiveMixing', 'AdaptiveSamplingMixing', 'bbox_xyxy_to_xyzr', 'xyzr_to_bbox_xyxy',
    'xyzr_to_wh', 'refine_xyzr', 'xyzr_position_embedding', 'make_sample_points',
    'pyramid_level_weights', 'sampling_3d'
]

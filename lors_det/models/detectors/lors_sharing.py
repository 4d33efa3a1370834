"""``LORSSharing``: any mmdet detector with LORS on stacks of its layers, from its config.

    model = dict(type='LORSSharing', detector_type='SparseRCNN', stacks=[...], <the detector's
                 own keys: backbone, neck, roi_head, ...>)

A config inherits the stock one (``_base_ = 'mmdet::sparse_rcnn/...'``) and only sets ``type``,
``detector_type`` and ``stacks``, so ``model.backbone`` etc. stay where mmdet's tools look for
them. What is built is the stock detector itself (same class, same state-dict keys outside the
shared stacks), see :func:`lors_det.models.lors.stack_sharing.apply_lors`.
"""
import copy

from mmdet.registry import MODELS

from ..lors.stack_sharing import apply_lors


@MODELS.register_module()
def LORSSharing(detector_type: str, stacks: list, **detector_cfg):  # noqa: N802 (a type name)
    """The detector ``dict(type=detector_type, **detector_cfg)`` with ``stacks`` shared."""
    if detector_type == 'LORSSharing':
        raise ValueError('model.detector_type: the detector to share, not LORSSharing')
    # mmdet's detectors write train_cfg / test_cfg into the head configs they get: a copy keeps
    # the caller's config as written (it is dumped, e.g. by the fold tool)
    model = MODELS.build(copy.deepcopy(dict(type=detector_type, **detector_cfg)))
    try:
        return apply_lors(model, stacks)
    except ValueError as err:
        raise ValueError(f'model.{err}') from None

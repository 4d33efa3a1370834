# Copyright (c) lors_det authors.
"""CheckedCocoMetric: COCO box AP on the ground truth that training used."""
from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS

from ...datasets.annotation_rules import BoxReport, check_image_records, clean_box


@METRICS.register_module()
class CheckedCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` (same arguments) whose ground truth from ``ann_file`` follows
    the rule of ``CheckedCocoDataset`` (:mod:`lors_det.datasets.annotation_rules`): duplicated
    image ids are refused; non-finite, degenerate and outside boxes are dropped and the others
    clipped to their image, with the same warning. Scoring boxes that training dropped would
    count every correct detection of an image against them (one valid and one invalid box
    with a perfect detection: AP 0.505 instead of 1.0).

    Args:
        min_box_size (float): as for ``CheckedCocoDataset``. Defaults to 1.
    """

    def __init__(self, *args, min_box_size: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._coco_api is not None:
            self._apply_box_rule(kwargs.get('ann_file', args[0] if args else None),
                                 min_box_size)

    def _apply_box_rule(self, ann_file: str, min_box_size: float) -> None:
        coco = self._coco_api
        check_image_records(coco.dataset.get('images', []), ann_file)
        report, kept = BoxReport(), []
        for ann in coco.dataset.get('annotations', []):
            img = coco.imgs.get(ann.get('image_id'))
            if img is None:  # pycocotools ignores it as well
                kept.append(ann)
                continue
            clean, outcome = clean_box(ann, img['width'], img['height'], min_box_size)
            report.add(ann, outcome)
            if clean is not None:
                kept.append(clean)
        report.warn(ann_file, f'{type(self).__name__}, the rule training uses')
        if report.ids:
            coco.dataset['annotations'] = kept
            coco.createIndex()

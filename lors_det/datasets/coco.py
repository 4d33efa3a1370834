# Copyright (c) lors_det authors.
"""COCO detection dataset with explicit, documented handling of bad annotations."""
import logging
from typing import List

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.logging import print_log

from .checks import dataset_path_problems


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` with input checks and one rule for bad boxes.

    Differences from ``CocoDataset`` (everything else, e.g. ``iscrowd`` -> ignore, is kept):

    * Missing ``data_root`` / ``ann_file`` / image folder: ``FileNotFoundError`` saying which
      key to set, instead of an error from inside pycocotools.
    * Boxes: every ``[x, y, w, h]`` is clipped to the image ``[0, width] x [0, height]``.
      A box whose clipped width or height is below ``min_box_size`` pixels (zero or negative
      size, or entirely outside the image) is dropped, as is an annotation with ``area <= 0``.
      ``CocoDataset`` keeps partly-outside boxes unclipped and needs ``area``; here a missing
      ``area`` is filled with the clipped box area. Clipped/dropped boxes are counted in one
      warning per dataset.
    * ``filter_cfg.filter_empty_gt`` (train only, as in mmdet) removes images left without
      instances after the rule above, not only images without raw annotations. Images
      without annotations are always kept in ``test_mode`` (val/test).
    * An image the pipeline cannot load or transform (corrupt, empty or truncated file)
      raises ``RuntimeError`` naming the file, chained to the original error.

    Args:
        min_box_size (float): smallest width/height in pixels of a kept box. Defaults to 1.
    """

    def __init__(self, *args, min_box_size: float = 1.0, **kwargs) -> None:
        self.min_box_size = min_box_size
        paths = dict(kwargs, ann_file=args[0]) if args else kwargs
        problems = dataset_path_problems(paths, key='<split>_dataloader.dataset')
        if problems:
            raise FileNotFoundError(f'{type(self).__name__}: ' + '\n  '.join(problems))
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        self._clipped, self._dropped = [], []
        data_list = super().load_data_list()
        if self._clipped or self._dropped:
            print_log(
                f'{self.ann_file}: clipped {len(self._clipped)} boxes to their image and '
                f'dropped {len(self._dropped)} degenerate/outside boxes (annotation ids, '
                f'first 10: clipped {self._clipped[:10]}, dropped {self._dropped[:10]})',
                logger='current', level=logging.WARNING)
        return data_list

    def _clean_annotation(self, ann: dict, width: int, height: int):
        """A copy of ``ann`` with its box clipped to the image, or None to drop it."""
        x, y, w, h = ann['bbox']
        x1, y1 = min(max(x, 0), width), min(max(y, 0), height)
        x2, y2 = min(max(x + w, 0), width), min(max(y + h, 0), height)
        if x2 - x1 < self.min_box_size or y2 - y1 < self.min_box_size \
                or ann.get('area', 1) <= 0:
            self._dropped.append(ann.get('id'))
            return None
        clean = dict(ann)
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            self._clipped.append(ann.get('id'))
            clean['bbox'] = [x1, y1, x2 - x1, y2 - y1]
        clean.setdefault('area', (x2 - x1) * (y2 - y1))
        return clean

    def parse_data_info(self, raw_data_info: dict) -> dict:
        img_info = raw_data_info['raw_img_info']
        anns = [
            self._clean_annotation(ann, img_info['width'], img_info['height'])
            for ann in raw_data_info['raw_ann_info'] if not ann.get('ignore', False)
        ]
        raw_data_info = dict(raw_data_info, raw_ann_info=[a for a in anns if a is not None])
        return super().parse_data_info(raw_data_info)

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except Exception as error:
            img_path = self.get_data_info(idx).get('img_path')
            raise RuntimeError(f'{type(self).__name__}: failed to load/transform image '
                               f'{img_path!r} (index {idx} of {self.ann_file!r}): '
                               f'{type(error).__name__}: {error}') from error

    def filter_data(self) -> List[dict]:
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        filter_empty_gt = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        return [
            info for info in self.data_list
            if (info['instances'] or not filter_empty_gt)
            and min(info['width'], info['height']) >= min_size
        ]

# Copyright (c) lors_det authors.
"""COCO detection dataset with explicit, documented handling of bad annotations."""
import os
from typing import List, Optional

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .annotation_rules import BoxReport, CheckedCOCO, clean_box
from .checks import _URI, dataset_path_problems

_JPEG_START, _JPEG_END = b'\xff\xd8', b'\xff\xd9'


def jpeg_truncation(path: str) -> Optional[str]:
    """Why the JPEG file ``path`` is truncated, or None (also for files that are no JPEG).

    Reads the first 2 and at most the last 64 KiB: a complete JPEG ends with the end-of-image
    marker ``FF D9`` (zero padding after it is allowed).
    """
    with open(path, 'rb') as f:
        if f.read(2) != _JPEG_START:
            return None
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 65536))
        tail = f.read().rstrip(b'\x00')
    if tail.endswith(_JPEG_END):
        return None
    return f'{size} bytes without the end-of-image marker FF D9 at the end'


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` with input checks and one rule for bad boxes.

    Differences from ``CocoDataset`` (everything else, e.g. ``iscrowd`` -> ignore, is kept):

    * Missing ``data_root`` / ``ann_file`` / image folder: ``FileNotFoundError`` saying which
      key to set, instead of an error from inside pycocotools (when the annotations are
      loaded: at build time, or at ``full_init()`` with ``lazy_init=True``).
    * Image records: duplicated ids or a missing ``file_name`` / ``width`` / ``height`` are
      refused, naming the annotation file and the ids (``annotation_rules.CheckedCOCO``).
    * Boxes: the rule of :mod:`.annotation_rules`, which ``CheckedCocoMetric`` applies to the
      evaluation's ground truth too: non-finite boxes and unknown ``category_id`` are dropped;
      boxes are clipped to the image; a box whose clipped width or height is below
      ``min_box_size`` pixels, or with ``area <= 0``, is dropped. ``CocoDataset`` keeps
      partly-outside boxes unclipped and needs ``area``; here a missing ``area`` is filled
      with the clipped box area. Clipped/dropped boxes are counted, by reason, in one warning
      per dataset.
    * ``filter_cfg.filter_empty_gt`` (train only, as in mmdet) removes images left without
      instances after the rule above, not only images without raw annotations. Images
      without annotations are always kept in ``test_mode`` (val/test).
    * An image the pipeline cannot load or transform (corrupt, empty or truncated file)
      raises ``RuntimeError`` naming the file, chained to the original error. OpenCV decodes a
      truncated JPEG without an error (it fills in the undecoded rest), so a local JPEG that
      does not end with the end-of-image marker ``FF D9`` is refused as truncated
      (``check_jpeg_end=False`` turns this off, e.g. for files with vendor data after the
      marker).

    Args:
        min_box_size (float): smallest width/height in pixels of a kept box, at least 1
            (``CocoDataset.parse_data_info`` drops boxes under 1 px in any case, so a smaller
            value would be silently ineffective and is refused). Defaults to 1.
        check_jpeg_end (bool): refuse local JPEG files without the end-of-image marker.
            Defaults to True.
    """

    COCOAPI = CheckedCOCO

    def __init__(self, *args, min_box_size: float = 1.0, check_jpeg_end: bool = True,
                 **kwargs) -> None:
        if not min_box_size >= 1:
            raise ValueError(f'{type(self).__name__}: min_box_size={min_box_size!r} must be >= 1 '
                             '(mmdet\'s CocoDataset drops boxes narrower or lower than 1 px)')
        self.min_box_size = min_box_size
        self.check_jpeg_end = check_jpeg_end
        # the paths as configured (BaseDataset joins them with data_root in place)
        self._path_cfg = dict(kwargs, ann_file=args[0]) if args else dict(kwargs)
        super().__init__(*args, **kwargs)

    def full_init(self) -> None:
        """Check the files, then load the annotations.

        Runs in ``__init__`` unless ``lazy_init=True``: ``init_detector`` / ``DetInferencer``
        build the test dataset lazily only to read its ``metainfo``, which must work on a
        machine without the dataset.
        """
        if not self._fully_initialized:
            problems = dataset_path_problems(self._path_cfg, key='<split>_dataloader.dataset')
            if problems:
                raise FileNotFoundError(f'{type(self).__name__}: ' + '\n  '.join(problems))
        super().full_init()

    def load_data_list(self) -> List[dict]:
        self._box_report = BoxReport()
        data_list = super().load_data_list()
        self._box_report.warn(self.ann_file, f'{type(self).__name__}, training and evaluation '
                              'use the same rule')
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict:
        img_info = raw_data_info['raw_img_info']
        anns = []
        for ann in raw_data_info['raw_ann_info']:
            if ann.get('ignore', False):
                continue
            clean, outcome = clean_box(ann, img_info['width'], img_info['height'],
                                       self.min_box_size, self.cat_ids)
            self._box_report.add(ann, outcome)
            if clean is not None:
                anns.append(clean)
        return super().parse_data_info(dict(raw_data_info, raw_ann_info=anns))

    def _check_image_file(self, img_path: Optional[str]) -> None:
        if not self.check_jpeg_end or not img_path or self.backend_args \
                or _URI.match(str(img_path)):
            return
        problem = jpeg_truncation(img_path)
        if problem:
            raise OSError(f'truncated JPEG: {problem}; if the file is intact, set '
                          'check_jpeg_end=False in the dataset config')

    def prepare_data(self, idx: int):
        img_path = self.get_data_info(idx).get('img_path')
        try:
            self._check_image_file(img_path)
            return super().prepare_data(idx)
        except Exception as error:
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

# Copyright (c) lors_det authors.
"""One rule for bad COCO annotations, applied by the dataset (training) and the metric
(evaluation) alike, so a box training never sees is not scored either.

* A box ``[x, y, w, h]`` with a missing or non-finite number, or an unknown ``category_id``
  (training side), is dropped.
* Otherwise it is clipped to the image ``[0, width] x [0, height]``; if the clipped width or
  height is below ``min_box_size`` pixels (zero or negative size, entirely outside the image),
  or ``area <= 0``, it is dropped.
* Image records must have unique ids and a ``file_name``, ``width`` and ``height``: anything
  else is refused, naming the annotation file and the image ids (pycocotools would otherwise
  merge two images under one id, training an image with another's boxes).
"""
import logging
import math
from collections import Counter, defaultdict
from typing import Collection, Dict, List, Optional, Sequence

from mmdet.datasets.api_wrappers import COCO
from mmengine.logging import print_log

KEPT, CLIPPED = 'kept', 'clipped'
DROPPED = ('non-finite or missing coordinates', 'degenerate or outside the image', 'area <= 0',
           'unknown category_id')


def check_image_records(images: Sequence[dict], ann_file: str) -> None:
    """Refuse duplicated image ids and image records without file_name / width / height."""
    ids = Counter(img.get('id') for img in images)
    duplicated = sorted((i for i, n in ids.items() if n > 1), key=str)
    if duplicated:
        raise ValueError(f'{ann_file}: image ids are not unique: {duplicated[:10]} '
                         f'({len(duplicated)} ids appear more than once); each image needs its '
                         'own id, or its boxes go to another image')
    for img in images:
        missing = [k for k in ('id', 'file_name', 'width', 'height') if k not in img]
        if missing:
            raise ValueError(f'{ann_file}: image record with id {img.get("id")!r} has no '
                             f'{", ".join(missing)}')


def clean_box(ann: dict, width: float, height: float, min_box_size: float,
              known_category_ids: Optional[Collection] = None):
    """``(annotation, outcome)``: a copy of ``ann`` with its box clipped (outcome KEPT or
    CLIPPED), or ``(None, reason)`` with a reason of :data:`DROPPED`."""
    if known_category_ids is not None and ann.get('category_id') not in known_category_ids:
        return None, DROPPED[3]
    try:
        x, y, w, h = (float(v) for v in ann['bbox'])
    except (KeyError, TypeError, ValueError):
        return None, DROPPED[0]
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None, DROPPED[0]
    x1, y1 = min(max(x, 0.), width), min(max(y, 0.), height)
    x2, y2 = min(max(x + w, 0.), width), min(max(y + h, 0.), height)
    if x2 - x1 < min_box_size or y2 - y1 < min_box_size:
        return None, DROPPED[1]
    if ann.get('area', 1) <= 0:
        return None, DROPPED[2]
    clean = dict(ann)
    outcome = KEPT
    if (x1, y1, x2, y2) != (x, y, x + w, y + h):
        outcome = CLIPPED
        clean['bbox'] = [x1, y1, x2 - x1, y2 - y1]
    clean.setdefault('area', (x2 - x1) * (y2 - y1))
    return clean, outcome


class BoxReport:
    """Counts clipped and dropped boxes (by reason) and logs them in one warning."""

    def __init__(self) -> None:
        self.ids: Dict[str, List] = defaultdict(list)

    def add(self, ann: dict, outcome: str) -> None:
        if outcome != KEPT:
            self.ids[outcome].append(ann.get('id'))

    def warn(self, ann_file: str, where: str) -> None:
        if not self.ids:
            return
        clipped = self.ids.get(CLIPPED, [])
        dropped = {r: self.ids[r] for r in DROPPED if r in self.ids}
        parts = [f'clipped {len(clipped)} boxes to their image (ids {clipped[:10]})'] \
            if clipped else []
        parts += [f'dropped {len(ids)} ({reason}; ids {ids[:10]})'
                  for reason, ids in dropped.items()]
        print_log(f'{ann_file} ({where}): ' + ', '.join(parts), logger='current',
                  level=logging.WARNING)


class CheckedCOCO(COCO):
    """mmdet's COCO API that refuses bad image records (:func:`check_image_records`) before
    indexing them."""

    def __init__(self, annotation_file: Optional[str] = None) -> None:
        self._annotation_file = annotation_file
        super().__init__(annotation_file)

    def createIndex(self) -> None:  # noqa: N802  (pycocotools' name)
        check_image_records(self.dataset.get('images', []),
                            getattr(self, '_annotation_file', None) or '<annotations>')
        super().createIndex()

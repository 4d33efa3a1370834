# Copyright (c) lors_det authors.
"""Registered dataset class of the embedded digits demo data."""
from typing import Optional

from mmdet.registry import DATASETS

from .coco import CheckedCocoDataset
from .digits import DIGITS_CLASSES, ensure_digits_dataset


@DATASETS.register_module()
class DigitsDetDataset(CheckedCocoDataset):
    """COCO-format handwritten-digits detection data, generated into ``data_root`` on first use.

    Loading the annotations (``full_init``: when the dataset is built, or later with
    ``lazy_init=True``) first calls :func:`~lors_det.datasets.digits.ensure_digits_dataset`,
    which returns at once when ``data_root`` already holds the data generated with the same
    ``generator_cfg``. A lazily built dataset (``init_detector`` / ``DetInferencer`` build one
    only to read ``metainfo``) writes nothing. Give the train and val datasets the same
    ``generator_cfg`` (the demo config shares one variable), otherwise each would regenerate
    the other's data.

    Args:
        data_root (str): where the data lives / is generated. Defaults to
            ``'data/digits_det/'`` (relative to the working directory, the repo root).
        generator_cfg (dict, optional): fields of
            :class:`~lors_det.datasets.digits.DigitsDetSpec` (split sizes, image size, seed...).
        **kwargs: as for :class:`CheckedCocoDataset`; ``ann_file`` is
            ``'annotations/instances_{train,val}.json'`` and ``data_prefix.img`` is
            ``'{train,val}/'``.
    """

    METAINFO = dict(
        classes=DIGITS_CLASSES,
        palette=[(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                 (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
                 (188, 189, 34), (23, 190, 207)])
    # Tools skip their "data root exists" check for datasets that create their own files.
    GENERATES_DATA = True

    def __init__(self,
                 *args,
                 data_root: str = 'data/digits_det/',
                 generator_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        self._generator = (data_root, dict(generator_cfg or {}))
        super().__init__(*args, data_root=data_root, **kwargs)

    def full_init(self) -> None:
        if not self._fully_initialized:
            data_root, generator_cfg = self._generator
            ensure_digits_dataset(data_root, **generator_cfg)
        super().full_init()
